"""Ensembles of trained runs: the mean of their class probabilities (each already
averaged over crops), as in the paper's section 4.2.3."""

from __future__ import annotations

import numpy as np

from bn_repro.errors import UserError
from bn_repro.evaluation.evaluators import EvalSpec, evaluate_workdir, saved_evaluation
from bn_repro.workdir import Workdir


def top_k_errors(probs: np.ndarray, labels: np.ndarray) -> dict:
  """Top-1 / top-5 error of class probabilities, as fractions of all rows."""
  top5 = np.argsort(-probs, axis=1, kind='stable')[:, :5]
  top1_correct = int(np.sum(top5[:, 0] == labels))
  top5_correct = int(np.sum(np.any(top5 == labels[:, None], axis=1)))
  n = len(labels)
  return {'examples': n, 'top1_error': 1 - top1_correct / n, 'top5_error': 1 - top5_correct / n}


def ensemble(workdirs: list[str], spec: EvalSpec, *, batch_size: int | None = None,
             log=print) -> dict:
  """Each member's errors and the ensemble's, over the same examples."""
  spec.validate()
  if not workdirs:
    raise UserError('--workdirs lists no workdir')
  configs = [Workdir(w).load_config() for w in workdirs]
  splits = [spec.split or c.data.eval_split for c in configs]
  for key, values in (('dataset', [c.data.dataset for c in configs]),
                      ('num_classes', [c.model.num_classes for c in configs]),
                      ('eval split', splits)):
    if len(set(values)) > 1:
      raise UserError(f'ensemble members differ in {key}: '
                      + ', '.join(f'{w}: {v}' for w, v in zip(workdirs, values)))
  members = []
  for workdir, split in zip(workdirs, splits):
    member = saved_evaluation(workdir, spec, split)
    if member is None:
      log(f'evaluating {workdir} ({spec.name(split)}) ...')
      member = evaluate_workdir(workdir, spec, batch_size=batch_size, keep_probs=True,
                                save_probs=Workdir(workdir).writable())
    else:
      log(f'reusing the probabilities saved for {workdir}')
    members.append(member)
  return {'split': splits[0], 'statistics': spec.statistics, 'crops': spec.crops,
          'rows': ensemble_rows(members)}


def ensemble_rows(members) -> list[dict]:
  """members: WorkdirEvaluations with probabilities -> each member's errors and the ensemble's."""
  labels = members[0].labels
  for member in members:
    if not np.array_equal(member.labels, labels):
      raise UserError(f'{member.record["workdir"]} was evaluated on other examples than '
                      f'{members[0].record["workdir"]}')
  rows = [{'member': m.record['name'], 'workdir': m.record['workdir'],
           'step': m.record['checkpoint_step'], **top_k_errors(m.probs, labels)}
          for m in members]
  mean_probs = np.mean([m.probs for m in members], axis=0)
  rows.append({'member': f'ensemble of {len(members)}', 'workdir': '', 'step': '',
               **top_k_errors(mean_probs, labels)})
  return rows
