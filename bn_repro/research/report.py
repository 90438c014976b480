"""The reproduction's report in its results folder: summary.json (the machine form),
commands.md (every command, as typed at the repository root) and tables.md."""

from __future__ import annotations

import dataclasses
import json
import os
import platform

from bn_repro.research import figures
from bn_repro.research import reproduce as rp
from bn_repro.research.command_runner import Runner
from bn_repro.workdir import write_json_on_process_0

SUMMARY_FILE = 'summary.json'
COMMANDS_FILE = 'commands.md'
TABLES_FILE = 'tables.md'


@dataclasses.dataclass
class Findings:
  """The rows of every table, from the runs finished so far."""
  figure1: list[dict]
  figure1_target: float       # the MLP without BN's best
  figure3: list[dict]
  target: float               # the no-BN Inception twin's best: the twins' target
  learning_rates: dict[str, float]
  bn_batch: list[dict]
  longer: list[dict]
  figure4: list[dict]


@dataclasses.dataclass
class Invocation:
  """What this invocation ran: mode, dataset, plan, the commit, its wall time."""
  mode: str
  dataset: str
  plan: rp.Plan
  commit: str
  wall_seconds: float
  finished: list[str]         # slugs of the finished runs
  code_note: str = ''         # code identities of the runs, when not one recorded code


def _serializable(rows):
  return json.loads(json.dumps(rows, default=lambda o: o.__dict__))


def machine() -> dict:
  return {'platform': platform.platform(), 'python': platform.python_version(),
          'cpus': os.cpu_count(), 'processor': platform.processor()}


def write(out_dir: str, runner: Runner, invocation: Invocation, findings: Findings) -> None:
  """Writes the three files of the report."""
  summary = {'mode': invocation.mode, 'dataset': invocation.dataset,
             'plan': dataclasses.asdict(invocation.plan),
             'figure1': _serializable(findings.figure1),
             'figure3': _serializable(findings.figure3),
             'target': findings.target, 'bn_batch': _serializable(findings.bn_batch),
             'longer': _serializable(findings.longer), 'figure4': findings.figure4,
             'runs_finished': sorted(invocation.finished), 'machine': machine(),
             'git_commit': invocation.commit, 'code_identity_note': invocation.code_note,
             'wall_seconds_this_invocation': round(invocation.wall_seconds, 1),
             'step_seconds': runner.timings}
  write_json_on_process_0(rp.results_path(out_dir, SUMMARY_FILE), summary)
  write_commands(out_dir, runner)
  with open(rp.results_path(out_dir, TABLES_FILE), 'w', encoding='utf-8') as f:
    f.write(tables_markdown(invocation, findings, summary['machine']))


def write_commands(out_dir: str, runner: Runner) -> None:
  with open(rp.results_path(out_dir, COMMANDS_FILE), 'w', encoding='utf-8') as f:
    f.write('# Commands, in order\n\n')
    for name, command in runner.commands:
      timing = runner.timings[name]
      timing = f'{timing} s' if isinstance(timing, float) else timing
      f.write(f'- {name} ({timing}):\n  `{command}`\n')


def tables_markdown(invocation: Invocation, findings: Findings, machine_info: dict) -> str:
  plan = invocation.plan
  bn_rows = [r for r in findings.figure3 if r['model'] in rp.BN_TWINS]
  parts = [
      f'# Results ({invocation.mode} mode, {invocation.dataset})\n\n',
      f'Machine: {machine_info["platform"]}, {machine_info["cpus"]} CPUs. Commit '
      f'{invocation.commit}. This invocation: {invocation.wall_seconds / 60:.1f} min. Finished '
      f'runs: {len(invocation.finished)} of {len(rp.plan_runs(plan))}.\n\n',
      f'Code identity: {invocation.code_note}.\n\n' if invocation.code_note else '',
      '## Figure 1: the 3x100 sigmoid MLP\n\n',
      rp.figure1_markdown(findings.figure1, findings.figure1_target) + '\n',
      f'\n![Figure 1(a)]({figures.FIGURE1A})\n![Figure 1(b,c)]({figures.FIGURE1BC})\n',
      '\n## Figures 2 and 3: the five paper models and two controls (twins)\n\n',
      rp.figure3_markdown(findings.figure3, findings.target, findings.learning_rates) + '\n\n',
      ''.join(f'![Figure 2, {label}]({figures.figure2_file(label)})\n'
              for label in rp.STATS_LABELS.values()),
      '\n## BN statistics during training: EMA, debiased EMA, population\n\n',
      rp.statistics_markdown(bn_rows) + '\n',
      '\n## The BN batch: all devices (64 examples) vs per replica (32), one seed\n\n',
      rp.simple_rows_markdown(findings.bn_batch, 'run') + f'\n\n![BN batch]({figures.BN_BATCH})\n',
      f'\n## Longer training: BN-x5 and BN-x30 for {plan.long_twin_steps} steps, one seed\n\n',
      rp.simple_rows_markdown(findings.longer, 'run') + f'\n\n![longer]({figures.LONGER})\n',
      '\n## Figure 4 in spirit: crops and ensembles (population statistics)\n\n',
      rp.figure4_markdown(findings.figure4) + '\n',
      '\n## Internal covariate shift probe (Inception vs BN-x5 twins)\n\n',
  ]
  parts += [f'![{layer}]({figures.probe_file(layer)})\n'
            f'![{layer} drift]({figures.probe_file(layer, drift=True)})\n'
            for layer in rp.PROBE_LAYERS]
  return ''.join(parts)
