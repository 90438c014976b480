"""Figure 4 in spirit: population statistics of the first-seed BN twins and of every BN-x30
seed, multi-crop evaluations of BN-x30, and ensembles, each a recorded command line."""

from __future__ import annotations

import json
import os

from bn_repro.research import reproduce as rp
from bn_repro.research.command_runner import Runner
from bn_repro.research.figures import first_seed_runs
from bn_repro.workdir import Workdir

FOUR_TWINS = 'ensemble of ' + ', '.join(rp.BN_TWINS)


def x30_seeds_label(seeds: int) -> str:
  return f'ensemble of BN-x30, {seeds} seeds'


def output_stem(label: str, crops: int) -> str:
  """The name of an ensemble's output file in eval/, without '.json'."""
  return f'{rp.slug(label)}_{crops}crop'


def label_of(stem: str, members: int, crops: int) -> str:
  """The readable name of the ensemble saved as `stem` (the stem itself if unknown)."""
  for label in (FOUR_TWINS, x30_seeds_label(members)):
    if output_stem(label, crops) == stem:
      return f'{label} ({crops} crop{"s" if crops > 1 else ""})'
  return stem


def figure4(runner: Runner, plan: rp.Plan, finished: dict) -> list[dict]:
  """Runs (or reuses) the evaluations; one row per evaluation that has an output."""
  members = first_seed_runs(finished, plan, rp.BN_TWINS)
  x30_seeds = [w for r, w in finished.items() if r.model == 'BN-x30' and not r.variant]
  if len(members) < len(rp.BN_TWINS) or len(x30_seeds) < len(plan.seeds):
    return []
  for workdir in sorted(set(members.values()) | set(x30_seeds)):
    meta = Workdir.population_meta_file(Workdir(workdir).population_dir(plan.twin_steps))
    runner.command(f'population statistics {os.path.basename(workdir)}',
                   'scripts/population_stats.py', '--workdir', workdir,
                   f'--num_batches={plan.population_batches}', data=False,
                   skip=os.path.exists(meta))
  rows = []
  x30 = members['BN-x30']
  for crops in plan.crop_modes:
    out = rp.results_path(runner.out_dir, 'eval', f'bn_x30_{crops}crop.json')
    runner.command(f'evaluate BN-x30 {crops} crops', 'scripts/ensemble.py', '--workdirs', x30,
                   '--statistics', 'population', '--crops', str(crops),
                   '--split', plan.crops_split, '--output', out, data=False,
                   skip=evaluated(out, [x30]))
    rows.append(_row(out, 'BN-x30 twin', crops, 1))
  ensembles = {FOUR_TWINS: [members[m] for m in rp.BN_TWINS],
               x30_seeds_label(len(x30_seeds)): sorted(x30_seeds)}
  for label, workdirs in ensembles.items():
    for crops in plan.ensemble_crops:
      out = rp.results_path(runner.out_dir, 'eval', output_stem(label, crops) + '.json')
      runner.command(f'{label}, {crops} crops', 'scripts/ensemble.py', '--workdirs',
                     ','.join(workdirs), '--statistics', 'population', '--crops', str(crops),
                     '--split', plan.crops_split, '--output', out, data=False,
                     skip=evaluated(out, workdirs))
      rows.append(_row(out, label, crops, len(workdirs)))
  return [r for r in rows if r]


def evaluated(out: str, workdirs: list[str]) -> bool:
  """Whether `out` holds an evaluation of exactly these runs as they are now: an output
  left from other runs, or from before a member was retrained, is made again."""
  if not os.path.exists(out):
    return False
  with open(out, encoding='utf-8') as f:
    members = [row['workdir'] for row in json.load(f)['rows'] if row['workdir']]
  if sorted(map(os.path.abspath, members)) != sorted(map(os.path.abspath, workdirs)):
    return False
  made = os.path.getmtime(out)
  return all(os.path.getmtime(Workdir(w).results_file) <= made for w in workdirs)


def _row(path: str, model: str, crops: int, models: int) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    last = json.load(f)['rows'][-1]
  return {'model': model, 'crops': crops, 'models': models, 'examples': last['examples'],
          'top1_error': last['top1_error'], 'top5_error': last['top5_error']}
