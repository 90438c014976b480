"""A run's workdir: every file in it is named here, and written through here.

  <workdir>/config.json              the config the run trains with
  <workdir>/checkpoints/<step>/      orbax checkpoints (model, training state, metadata)
  <workdir>/metrics.jsonl            one JSON record per metrics write (for plots)
  <workdir>/events.out.tfevents.*    TensorBoard
  <workdir>/targets.json             first step reaching each target accuracy
  <workdir>/results.json             the final evaluation
  <workdir>/eval/<name>_step<S>.*    evaluations of checkpoints (JSON, and .npz probabilities)
  <workdir>/population_stats/<S>/    population statistics (Algorithm 2) of checkpoint S
  <workdir>/ics_probe.jsonl          internal-covariate-shift probe records

Only process 0 writes the JSON files; every process may read them.
"""

from __future__ import annotations

import json
import os

import ml_collections

from bn_repro.errors import UserError
from bn_repro.parallel import device_map

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
METRICS_FILE = 'metrics.jsonl'
TARGETS_FILE = 'targets.json'
RESULTS_FILE = 'results.json'
EVAL_DIR = 'eval'
POPULATION_DIR = 'population_stats'
PROBE_FILE = 'ics_probe.jsonl'


def write_json(path: str, value) -> None:
  """Writes `value` as indented JSON (process 0 only), creating the folder; readers see the
  old file or the new one, never half of one."""
  if device_map.process_index() != 0:
    return
  path = os.path.abspath(path)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f'{path}.tmp{os.getpid()}'
  with open(temporary, 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=1)
  os.replace(temporary, path)


def read_json(path: str):
  with open(path, encoding='utf-8') as f:
    return json.load(f)


class Workdir:
  """The files of one run's workdir (see the module docstring)."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)

  def __str__(self) -> str:
    return self.path

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def config_file(self) -> str:
    return self.file(CONFIG_FILE)

  @property
  def checkpoint_dir(self) -> str:
    return self.file(CHECKPOINT_DIR)

  @property
  def metrics_file(self) -> str:
    return self.file(METRICS_FILE)

  @property
  def targets_file(self) -> str:
    return self.file(TARGETS_FILE)

  @property
  def results_file(self) -> str:
    return self.file(RESULTS_FILE)

  @property
  def probe_file(self) -> str:
    return self.file(PROBE_FILE)

  @property
  def population_root(self) -> str:
    return self.file(POPULATION_DIR)

  def population_dir(self, step: int) -> str:
    return os.path.join(self.population_root, str(step))

  def eval_files(self, name: str, step: int) -> tuple[str, str]:
    """(JSON record, .npz probabilities) of the evaluation `name` of checkpoint `step`."""
    base = os.path.join(self.file(EVAL_DIR), f'{name}_step{step}')
    return base + '.json', base + '.npz'

  def create(self) -> None:
    os.makedirs(self.path, exist_ok=True)

  def write_config(self, config: ml_collections.ConfigDict) -> None:
    write_json(self.config_file, json.loads(config.to_json_best_effort()))

  def load_config(self) -> ml_collections.ConfigDict:
    """The config this workdir was trained with."""
    if not os.path.exists(self.config_file):
      raise UserError(f'{self.config_file} does not exist: is {self.path} a training workdir?')
    return ml_collections.ConfigDict(read_json(self.config_file))

  def read_results(self) -> dict | None:
    return read_json(self.results_file) if os.path.exists(self.results_file) else None

  def read_metrics(self) -> list[dict]:
    """The records of metrics.jsonl, in order."""
    with open(self.metrics_file, encoding='utf-8') as f:
      return [json.loads(line) for line in f if line.strip()]
