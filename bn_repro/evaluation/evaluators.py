"""Named evaluations of a trained workdir: (BN statistics, crops, split).

An evaluation such as ('population', 144, 'validation') of checkpoint S is
recorded in the workdir (Workdir.eval_files: a JSON record and, when asked
for, the per-example class probabilities as .npz, which ensembles reuse while
the checkpoint and its population statistics are unchanged).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import zipfile

import numpy as np
from absl import logging

from bn_repro import files
from bn_repro.data import crops as crops_lib
from bn_repro.data import pipeline
from bn_repro.errors import UserError, check_choice
from bn_repro.evaluation import exact, population
from bn_repro.evaluation.checkpoint_population import require_batch_norm
from bn_repro.evaluation.trained import latest_step, load_trained
from bn_repro.models.batchnorm import EVAL_STATISTICS
from bn_repro.parallel import device_map
from bn_repro.workdir import Workdir, write_json_on_process_0

STATISTICS = EVAL_STATISTICS


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  statistics: str = 'ema'
  crops: int = 1
  split: str | None = None   # None: the config's eval split

  def validate(self):
    check_choice('--statistics', self.statistics, STATISTICS)
    check_choice('--crops', self.crops, crops_lib.CROP_MODES)

  def name(self, split: str) -> str:
    safe_split = ''.join(c if c.isalnum() else '_' for c in split)
    return f'{safe_split}_{self.statistics}_{self.crops}crop'


@dataclasses.dataclass(frozen=True)
class WorkdirEvaluation:
  """The record of one evaluation and, when kept, probabilities [N, K] and labels [N]."""
  record: dict
  probs: np.ndarray | None = None
  labels: np.ndarray | None = None


def default_batch_size(eval_batch_size: int, crops: int) -> int:
  """Global batch of images so that about eval_batch_size crops go through at once."""
  n = device_map.device_count()
  return max(1, eval_batch_size // crops // n) * n


def evaluate_workdir(workdir: str, spec: EvalSpec, *, step: int | None = None,
                     batch_size: int | None = None, save_probs: bool = False,
                     keep_probs: bool = False) -> WorkdirEvaluation:
  """Evaluates a checkpoint exactly over a whole split and records the result in the
  workdir (unless it is read-only: then the result is only returned).

  save_probs: also save the per-example probabilities (for ensembles); keep_probs:
  return them (implied by save_probs).
  """
  spec.validate()
  trained = load_trained(workdir, step)
  writable = trained.workdir.writable()
  if save_probs and not writable:
    raise UserError(f'{trained.workdir} is read-only: the probabilities cannot be saved there')
  if not writable:
    logging.warning('%s is read-only: the result is printed, not recorded', trained.workdir)
  config = trained.config
  split = spec.split or config.data.eval_split
  population_stats, population_meta = None, None
  if spec.statistics == 'population':
    require_batch_norm(config)
    population_stats, population_meta = population.load(trained.workdir, trained.step)
  batch_size = batch_size or default_batch_size(config.eval_batch_size, spec.crops)
  device_map.per_device_batch('--batch_size', batch_size)

  source = pipeline.Source(config.data)
  preprocess = functools.partial(crops_lib.multi_crop, mode=spec.crops,
                                 crop_size=config.data.image_size, channels=source.spec.channels,
                                 crop_fraction=config.data.eval_crop_fraction)
  eval_data = pipeline.EvalData(source, global_batch=batch_size, preprocess=preprocess,
                                split=split)
  variables = trained.variables(spec.statistics, population_stats=device_map.replicate(
      population_stats) if population_stats else None)
  evaluation = exact.evaluate(trained.recipe.eval_step(spec.statistics), variables, eval_data,
                              keep_probs=save_probs or keep_probs)
  record = {
      'workdir': trained.workdir.path, 'name': config.name, 'checkpoint_step': trained.step,
      'dataset': config.data.dataset, 'split': split, 'statistics': spec.statistics,
      'crops': spec.crops,
      'num_classes': config.model.num_classes, **evaluation.result.metrics(prefix=''),
      'population_stats': population_meta,
  }
  json_path, npz_path = trained.workdir.eval_files(spec.name(split), trained.step)
  if writable:
    write_json_on_process_0(json_path, record)
  if save_probs and device_map.process_index() == 0:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, probs=evaluation.probs.astype(np.float32),
                        labels=evaluation.labels, record=json.dumps(record))
    files.write_bytes(npz_path, buffer.getvalue())
  return WorkdirEvaluation(record, evaluation.probs, evaluation.labels)


def saved_evaluation(workdir: str, spec: EvalSpec, split: str) -> WorkdirEvaluation | None:
  """The probabilities saved for the latest checkpoint, if still consistent with it; else None."""
  workdir = Workdir(workdir)
  step = latest_step(workdir)
  if step is None:
    return None
  _, npz_path = workdir.eval_files(spec.name(split), step)
  if not files.exists(npz_path):
    return None
  try:
    with np.load(io.BytesIO(files.read_bytes(npz_path))) as data:
      record = json.loads(str(data['record']))
      probs, labels = data['probs'], data['labels']
  except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as e:   # damaged: redo
    logging.warning('%s is damaged (%s); evaluating again', npz_path, e)
    return None
  if spec.statistics == 'population':
    try:
      _, meta = population.load(workdir, step)
    except UserError:
      return None
    if meta != record['population_stats']:
      return None  # recomputed since
  return WorkdirEvaluation(record, probs, labels)


def format_rows(rows: list[dict], first_column: str) -> str:
  width = max(len(str(r[first_column])) for r in rows) + 2
  lines = [f'{first_column:<{width}}{"examples":>10}{"top-1 err":>11}{"top-5 err":>11}'
           f'{"top-1 acc":>11}{"top-5 acc":>11}']
  for r in rows:
    lines.append(f'{str(r[first_column]):<{width}}{r["examples"]:>10}{r["top1_error"]:>11.4f}'
                 f'{r["top5_error"]:>11.4f}{1 - r["top1_error"]:>11.4f}{1 - r["top5_error"]:>11.4f}')
  return '\n'.join(lines)
