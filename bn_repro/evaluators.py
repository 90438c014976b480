"""Named evaluations of a trained workdir, and ensembles of several.

An evaluation is (BN statistics, crops, split): e.g. ('population', 144,
'validation'). Its results go to <workdir>/eval/<name>_step<S>.json, and its
per-example class probabilities, when asked for, to the matching .npz, which
ensembles reuse while the checkpoint (and its population statistics) are
unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np

from bn_repro import device_map, files, population_stats, steps
from bn_repro.errors import UserError, check_choice
from bn_repro.evaluation import evaluate
from bn_repro.input_pipeline import crops as crops_lib
from bn_repro.input_pipeline import pipeline
from bn_repro.train import load_config
from bn_repro.trained_run import load_run

EVAL_DIR = 'eval'
STATS = ('ema', 'population')


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  stats: str = 'ema'
  crops: int = 1
  split: str | None = None   # None: the config's eval split

  def validate(self):
    check_choice('--stats', self.stats, STATS)
    check_choice('--crops', self.crops, crops_lib.CROP_MODES)

  def name(self, split: str) -> str:
    safe_split = ''.join(c if c.isalnum() else '_' for c in split)
    return f'{safe_split}_{self.stats}_{self.crops}crop'


def top_k_errors(probs: np.ndarray, labels: np.ndarray) -> dict:
  """Top-1 / top-5 error of class probabilities, as fractions of all rows."""
  top5 = np.argsort(-probs, axis=1, kind='stable')[:, :5]
  top1_correct = int(np.sum(top5[:, 0] == labels))
  top5_correct = int(np.sum(np.any(top5 == labels[:, None], axis=1)))
  n = len(labels)
  return {'examples': n, 'top1_error': 1 - top1_correct / n, 'top5_error': 1 - top5_correct / n}


def default_batch_size(eval_batch_size: int, crops: int) -> int:
  """Global batch of images so that about eval_batch_size crops go through at once."""
  n = device_map.device_count()
  return max(1, eval_batch_size // crops // n) * n


def _paths(workdir: str, spec: EvalSpec, split: str, step: int) -> tuple[str, str]:
  base = os.path.join(os.path.abspath(workdir), EVAL_DIR, f'{spec.name(split)}_step{step}')
  return base + '.json', base + '.npz'


def evaluate_workdir(workdir: str, spec: EvalSpec, *, step: int | None = None,
                     batch_size: int | None = None, save_probs: bool = False):
  """Evaluates a checkpoint exactly over a whole split.

  Returns the result record, and with save_probs also (probabilities, labels)
  in split order.
  """
  spec.validate()
  trained = load_run(workdir, step)
  config = trained.config
  split = spec.split or config.data.eval_split
  population, population_meta = None, None
  if spec.stats == 'population':
    population_stats.require_batch_norm(config)
    population, population_meta = population_stats.load(workdir, trained.step)
  batch_size = batch_size or default_batch_size(config.eval_batch_size, spec.crops)
  device_map.per_device_batch('--batch_size', batch_size)

  source = pipeline.Source(config.data)
  preprocess = functools.partial(crops_lib.multi_crop, mode=spec.crops,
                                 crop_size=config.data.image_size, channels=source.spec.channels,
                                 crop_fraction=config.data.eval_crop_fraction)
  eval_data = pipeline.EvalData(source, global_batch=batch_size, preprocess=preprocess,
                                split=split)
  eval_step = steps.make_eval_step(trained.model, source.spec, stats=spec.stats,
                                   return_probs=save_probs)
  variables = trained.state.variables(device_map.replicate(population) if population else None)
  out = evaluate(eval_step, variables, eval_data)
  result = out[0] if save_probs else out
  record = {
      'workdir': os.path.abspath(workdir), 'name': config.name, 'checkpoint_step': trained.step,
      'dataset': config.data.dataset, 'split': split, 'stats': spec.stats, 'crops': spec.crops,
      'num_classes': config.model.num_classes, **result.metrics(prefix=''),
      'population_stats': population_meta,
  }
  json_path, npz_path = _paths(workdir, spec, split, trained.step)
  files.write_json(json_path, record)
  if device_map.process_index() == 0:
    if save_probs:
      np.savez_compressed(npz_path, probs=out[1].astype(np.float32), labels=out[2],
                          record=json.dumps(record))
  if save_probs:
    return record, out[1], out[2]
  return record


def cached_probs(workdir: str, spec: EvalSpec, split: str):
  """(record, probs, labels) saved for the latest checkpoint, if still consistent; else None."""
  from bn_repro.checkpointing import Checkpoints
  step = Checkpoints(workdir, read_only=True).latest_step()
  if step is None:
    return None
  _, npz_path = _paths(workdir, spec, split, step)
  if not os.path.exists(npz_path):
    return None
  with np.load(npz_path) as data:
    record = json.loads(str(data['record']))
    probs, labels = data['probs'], data['labels']
  if spec.stats == 'population':
    try:
      _, meta = population_stats.load(workdir, step)
    except UserError:
      return None
    if meta != record['population_stats']:
      return None  # recomputed since
  return record, probs, labels


def ensemble(workdirs: list[str], spec: EvalSpec, *, batch_size: int | None = None,
             log=print) -> dict:
  """Averages class probabilities over members (each already averaged over crops)."""
  spec.validate()
  if not workdirs:
    raise UserError('--workdirs lists no workdir')
  configs = [load_config(w) for w in workdirs]
  splits = [spec.split or c.data.eval_split for c in configs]
  for key, values in (('dataset', [c.data.dataset for c in configs]),
                      ('num_classes', [c.model.num_classes for c in configs]),
                      ('eval split', splits)):
    if len(set(values)) > 1:
      raise UserError(f'ensemble members differ in {key}: '
                      + ', '.join(f'{w}: {v}' for w, v in zip(workdirs, values)))
  members = []
  for workdir, split in zip(workdirs, splits):
    cached = cached_probs(workdir, spec, split)
    if cached is None:
      log(f'evaluating {workdir} ({spec.name(split)}) ...')
      cached = evaluate_workdir(workdir, spec, batch_size=batch_size, save_probs=True)
    else:
      log(f'reusing the probabilities saved for {workdir}')
    members.append(cached)
  return {'split': splits[0], 'stats': spec.stats, 'crops': spec.crops,
          'rows': ensemble_rows(members)}


def ensemble_rows(members) -> list[dict]:
  """members: [(record, probs [N, K], labels [N])] -> each member's errors and the ensemble's."""
  labels = members[0][2]
  for record, _, member_labels in members:
    if not np.array_equal(member_labels, labels):
      raise UserError(f'{record["workdir"]} was evaluated on other examples than '
                      f'{members[0][0]["workdir"]}')
  rows = [{'member': r['name'], 'workdir': r['workdir'], 'step': r['checkpoint_step'],
           **top_k_errors(p, labels)} for r, p, _ in members]
  mean_probs = np.mean([p for _, p, _ in members], axis=0)
  rows.append({'member': f'ensemble of {len(members)}', 'workdir': '', 'step': '',
               **top_k_errors(mean_probs, labels)})
  return rows


def format_rows(rows: list[dict], first_column: str) -> str:
  width = max(len(str(r[first_column])) for r in rows) + 2
  lines = [f'{first_column:<{width}}{"examples":>10}{"top-1 err":>11}{"top-5 err":>11}'
           f'{"top-1 acc":>11}{"top-5 acc":>11}']
  for r in rows:
    lines.append(f'{str(r[first_column]):<{width}}{r["examples"]:>10}{r["top1_error"]:>11.4f}'
                 f'{r["top5_error"]:>11.4f}{1 - r["top1_error"]:>11.4f}{1 - r["top5_error"]:>11.4f}')
  return '\n'.join(lines)
