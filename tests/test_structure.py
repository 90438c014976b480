"""The package's shape: layers whose imports run one way, an acyclic import graph,
TensorFlow only in the input pipeline, and a README layout table that lists every module."""

import ast
import os
import re
import subprocess
import sys

PACKAGE = 'bn_repro'


def _modules(repo_root):
  """{module name: file} of every module of the package."""
  modules = {}
  for root, _, files in os.walk(os.path.join(repo_root, PACKAGE)):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(root, name)
        module = os.path.relpath(path, repo_root)[:-3].replace(os.sep, '.')
        modules[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
  return modules


def import_graph(repo_root) -> dict[str, set[str]]:
  """module -> the package's modules it imports, anywhere in the file (function-local
  imports included)."""
  modules = _modules(repo_root)
  graph = {}
  for module, path in modules.items():
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    targets = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
      names = []
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:
          parts = package.split('.')
          base = '.'.join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        names = [base] + [f'{base}.{alias.name}' for alias in node.names]
      targets |= {n for n in names if n in modules and n != module}
    # A package's own __init__ is not an edge of its submodules (Python imports it first anyway).
    graph[module] = {t for t in targets if not module.startswith(t + '.')}
  return graph


def find_cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = 'open'
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 'done'
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def test_cycle_finder_finds_a_planted_cycle():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b'}, 'b': set()}) is None


def test_import_graph_has_no_cycle(repo_root):
  graph = import_graph(repo_root)
  assert len(graph) > 30 and 'bn_repro.loop.train' in graph
  assert 'bn_repro.training.recipes' in graph['bn_repro.loop.train']
  cycle = find_cycle(graph)
  assert cycle is None, ' -> '.join(cycle)


# The package's layers, lowest first (as bn_repro/__init__.py and the README state them):
# a module may import its own folder and any lower layer, never a higher one or a
# neighbour on its own floor.
LAYERS = (
    ('errors', 'files', 'faults', 'host'),
    ('parallel',),
    ('models', 'data'),
    ('workdir', 'cli'),
    ('training',),
    ('evaluation',),
    ('loop',),
    ('research', 'benchmarks'),
)


def _layer_of(module: str) -> str:
  """'bn_repro.training.state' -> 'training'; 'bn_repro.cli' -> 'cli'."""
  return module.split('.')[1]


def upward_imports(graph, layers=LAYERS) -> list[str]:
  """'importer -> imported' for every import between folders that does not go to a lower layer."""
  rank = {name: i for i, floor in enumerate(layers) for name in floor}
  bad = []
  for module, targets in graph.items():
    if module == PACKAGE:
      continue
    here = _layer_of(module)
    for target in targets:
      there = _layer_of(target)
      if there != here and not rank[there] < rank[here]:
        bad.append(f'{module} -> {target}')
  return sorted(bad)


def test_layer_check_finds_a_planted_upward_import():
  graph = {'bn_repro.training.state': {'bn_repro.evaluation.exact', 'bn_repro.models.layers'},
           'bn_repro.models.layers': {'bn_repro.data.specs'},
           'bn_repro.evaluation.exact': {'bn_repro.training.eval_step'}}
  assert upward_imports(graph) == ['bn_repro.models.layers -> bn_repro.data.specs',
                                   'bn_repro.training.state -> bn_repro.evaluation.exact']


def test_every_folder_is_a_layer_and_imports_run_downward(repo_root):
  graph = import_graph(repo_root)
  folders = {_layer_of(m) for m in graph if m != PACKAGE}
  listed = {name for floor in LAYERS for name in floor}
  assert folders == listed, 'LAYERS and the package tree differ'
  assert upward_imports(graph) == []


def test_layer_order_is_the_one_the_package_docstring_states(repo_root):
  doc = open(os.path.join(repo_root, PACKAGE, '__init__.py'), encoding='utf-8').read()
  order = re.findall(r'^- (\S+?)/?\s', doc, flags=re.M)
  assert tuple(order) == tuple(name for floor in LAYERS for name in floor)


def test_library_has_no_function_local_imports(repo_root):
  local = []
  for module, path in _modules(repo_root).items():
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        local += [f'{module}:{n.lineno}' for n in ast.walk(node)
                  if isinstance(n, (ast.Import, ast.ImportFrom))]
  assert not local, local


def test_only_cli_defines_or_reads_flags(repo_root):
  """The library takes values; the scripts' flags live in cli.py (and the scripts)."""
  readers = []
  for module, path in _modules(repo_root).items():
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
      if isinstance(node, ast.ImportFrom) and node.module == 'absl' and \
          any(alias.name == 'flags' for alias in node.names):
        readers.append(module)
  assert readers == ['bn_repro.cli']


NO_TENSORFLOW = r'''
import sys
sys.modules['tensorflow'] = None          # any import of TensorFlow now fails
import numpy as np
from bn_repro.benchmarks import steps as benchmark_steps
from bn_repro.evaluation import exact, population
from bn_repro.models import build_model
from bn_repro.parallel import device_map
from bn_repro.training.recipes import TrainingRecipe
from configs import tiny

config = tiny.get_config()
recipe = TrainingRecipe(config, steps_per_epoch=10)
setup = benchmark_steps.setup_train_step(config, 16)        # the benchmark's synthetic mode
batch = benchmark_steps.synthetic_batch(config, 16)


class Batches:                                              # exact evaluation on device batches
  num_examples = 13
  def batches(self):
    yield dict(batch, index=np.arange(16), mask=np.arange(16) < 13)


result = exact.evaluate(recipe.eval_step('ema'), setup.state.variables(), Batches()).result
stats = population.compute(recipe.model, setup.state.variables(), recipe.spec,
                           iter([device_map.shard(batch)] * 2), 2).stats
assert result.count == 13 and stats
assert 'tensorflow' not in [m for m in sys.modules if sys.modules[m] is not None]
print('ran without TensorFlow')
'''


def test_model_steps_evaluation_and_benchmark_run_without_tensorflow(repo_root):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8')
  out = subprocess.run([sys.executable, '-c', NO_TENSORFLOW], cwd=repo_root, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'ran without TensorFlow' in out.stdout


def _only_a_docstring(path) -> bool:
  body = ast.parse(open(path, encoding='utf-8').read()).body
  return len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body)


def test_readme_layout_table_lists_every_module(repo_root):
  with open(os.path.join(repo_root, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  table = readme[readme.index('## Layout'):]
  table = table[:table.index('\n## ', 1)]
  listed = set(re.findall(r'`(bn_repro/[\w/]+\.py)`', table))
  files = {os.path.relpath(p, repo_root) for p in _modules(repo_root).values()
           if not _only_a_docstring(p)}
  assert files - listed == set(), 'missing from the README layout table'
  assert listed - files == set(), 'listed in the README but not in the tree'
