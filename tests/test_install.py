"""The set-up recipe: requirement files, locks and pyproject ranges agree; the venv gets a
supported Python on machines that have none (Cloud TPU VM images: Python 3.10) or lack
Debian's venv package; the TPU script's remote set-up works there. Simulated with fake
commands on PATH that record what would run (no network)."""

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'scripts'))
import check_requirements  # noqa: E402

# Machines, as marker variables: the default Python on Linux x86_64, ARM nodes and Macs, and
# Python 3.11 on its own pins.
MACHINES = [dict(sys_platform=p, platform_machine=m, python_version=v,
                 python_full_version=v + '.0', platform_system=s, os_name='posix',
                 implementation_name='cpython', platform_python_implementation='CPython')
            for p, m, s in (('linux', 'x86_64', 'Linux'), ('linux', 'aarch64', 'Linux'),
                            ('darwin', 'arm64', 'Darwin'))
            for v in ('3.11', '3.12', '3.13')]


def _pins_on(path, machine):
  """{package: version} of the pins of `path` that apply on `machine`."""
  return {name: version for name, version, marker in check_requirements.direct_pins(path)
          if not marker or Marker(marker).evaluate(machine)}


def _lock_entries(path):
  """[(package, version, marker, hashes)] of a lock file."""
  text = open(os.path.join(REPO, path), encoding='utf-8').read()
  entries = []
  for block in re.split(r'\n(?=[A-Za-z0-9])', text):
    first = block.split('\\')[0].strip()
    if first.startswith('#') or '==' not in first:
      continue
    requirement, _, marker = first.partition(';')
    name, version = requirement.strip().split('==')
    entries.append((check_requirements.canonical_name(name.split('[')[0]), version.strip(),
                    marker.strip(), re.findall(r'--hash=sha256:[0-9a-f]{64}', block)))
  return entries


@pytest.mark.parametrize('path', sorted(check_requirements.PLATFORMS))
def test_each_lock_pins_what_its_requirement_file_pins_with_hashes(path):
  """The lock (`make lock`) is the requirement file resolved: on every machine each direct
  pin is locked at the same version, and every locked package has hashes."""
  entries = _lock_entries(check_requirements.lock_file(path))
  assert len(entries) > 50
  assert all(hashes for _, _, _, hashes in entries)
  for machine in MACHINES:
    locked = {name: version for name, version, marker, _ in entries
              if not marker or Marker(marker).evaluate(machine)}
    for name, version in _pins_on(path, machine).items():
      if machine['sys_platform'] == 'darwin' and name.startswith(('jax-cuda', 'libtpu')):
        continue   # accelerator plugins have no macOS wheels (nor is the file for Macs)
      assert locked.get(name) == version, (path, name, machine)


def test_pyproject_ranges_admit_the_pins():
  """`pip install -e .` declares ranges (an image's own JAX is kept); the pinned versions lie
  in them on every machine and Python, and every direct pin has a range."""
  project = tomllib.load(open(os.path.join(REPO, 'pyproject.toml'), 'rb'))['project']
  ranges = [Requirement(text) for text in project['dependencies']]
  for machine in MACHINES:
    pins = _pins_on('requirements.txt', machine)
    declared = {check_requirements.canonical_name(r.name): r for r in ranges
                if r.marker is None or r.marker.evaluate(machine)}
    assert set(declared) == set(pins), machine
    for name, version in pins.items():
      assert declared[name].specifier.contains(version), (name, version, machine)


def test_the_default_is_the_newest_stack_and_python_311_keeps_its_own():
  new = _pins_on('requirements.txt', MACHINES[1])
  old = _pins_on('requirements.txt', MACHINES[0])
  assert (new['jax'], new['jaxlib'], new['flax']) == ('0.12.0.1', '0.12.0.1', '0.12.12')
  assert (old['jax'], old['jaxlib'], old['flax']) == ('0.10.2', '0.10.2', '0.12.8')
  linux = _pins_on('requirements.txt', MACHINES[1])
  arm = _pins_on('requirements.txt', MACHINES[4])
  mac = _pins_on('requirements.txt', MACHINES[7])
  assert 'tensorflow-cpu' in linux and 'tensorflow' not in linux
  assert 'tensorflow' in arm and 'tensorflow' in mac and 'tensorflow-cpu' not in mac


@pytest.mark.parametrize('accel,plugins', [
    ('cuda12', ['jax-cuda12-plugin', 'jax-cuda12-pjrt']),
    ('cuda13', ['jax-cuda13-plugin', 'jax-cuda13-pjrt']),
    ('tpu', ['libtpu'])])
def test_each_accelerator_install_builds_on_the_cpu_pins(accel, plugins):
  """`make setup ACCEL=...` installs requirements-<accel>.txt, which adds to the CPU pins
  the plugins of exactly the pinned jaxlib (a CUDA plugin must equal jaxlib's version),
  for each Python line."""
  path = f'requirements-{accel}.txt'
  assert open(os.path.join(REPO, path)).read().count('-r requirements.txt') == 1
  for machine in (MACHINES[0], MACHINES[1], MACHINES[2]):
    pins = _pins_on(path, machine)
    for plugin in plugins:
      assert plugin in pins, (plugin, machine['python_version'])
      if plugin.startswith('jax-cuda'):
        assert pins[plugin] == pins['jaxlib'] == pins['jax']
  dry = subprocess.run(['make', '-n', 'setup', f'ACCEL={accel}'], cwd=REPO, capture_output=True,
                       text=True)
  assert f'pip install --quiet -r requirements-{accel}.txt' in dry.stdout
  locked = subprocess.run(['make', '-n', 'setup', f'ACCEL={accel}', 'LOCKED=1'], cwd=REPO,
                          capture_output=True, text=True)
  assert f'pip install --quiet --require-hashes -r requirements-{accel}.lock' in locked.stdout
  refused = subprocess.run(['make', '-n', 'setup', 'ACCEL=rocm'], cwd=REPO, capture_output=True,
                           text=True)
  assert refused.returncode != 0 and 'expected cpu, cuda12, cuda13 or tpu' in refused.stderr


# The machine of the set-up tests: the tools a shell script and make need, and no Python
# but what a test puts there.
_TOOLS = ('bash', 'sh', 'env', 'make', 'tar', 'gzip', 'mkdir', 'cat', 'rm', 'cp', 'mv', 'touch',
          'dirname', 'basename', 'grep', 'sed', 'sort', 'tail', 'head', 'tr', 'id', 'hostname',
          'nohup', 'setsid', 'chmod', 'ls', 'sleep', 'date', 'printf', 'test', 'uname', 'wc')


def _machine(tmp_path, pythons):
  """(PATH, HOME, log) of a simulated machine whose Pythons are `pythons`
  ({command name: script body}) and whose every other command is the real one."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for tool in _TOOLS:
    real = shutil.which(tool)
    if real:
      os.symlink(real, bin_dir / tool)
  log = tmp_path / 'commands.log'
  for name, body in pythons.items():
    _script(bin_dir / name, body)
  home = tmp_path / 'home'
  home.mkdir()
  return str(bin_dir), str(home), log


def _script(path, body):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text('#!/bin/bash\n' + body + '\n')
  path.chmod(0o755)


def _recording(log, name):
  return f'echo "{name} $*" >> {log}'


# A fake uv: records its calls; `uv venv` makes a venv whose python records what it is
# asked to run (pip installs, the training script) and succeeds.
def _fake_uv_body(log):
  return f'''{_recording(log, 'uv')}
if [[ $1 == venv ]]; then
  dir="${{@: -1}}"
  mkdir -p "$dir/bin"
  printf '#!/bin/bash\\necho "venv-python $*" >> {log}\\n' > "$dir/bin/python"
  chmod +x "$dir/bin/python"
fi'''


def _python310_body(log):
  """python3 of a TPU VM image: Python 3.10 (a version check fails, -V says 3.10.12), whose
  `-m pip install --user uv` is recorded and leaves a fake uv in ~/.local/bin (what pip
  would install there)."""
  return f'''if [[ "$1 $2" == "-m pip" ]]; then
  {_recording(log, 'python3')}
  mkdir -p "$HOME/.local/bin"
  cat > "$HOME/.local/bin/uv" <<'UV'
#!/bin/bash
{_fake_uv_body(log)}
UV
  chmod +x "$HOME/.local/bin/uv"
  exit 0
fi
[[ "$1" == -c ]] && exit 1
echo "Python 3.10.12"'''


def _run_make_venv(path, home, venv, extra_env=None):
  env = {'PATH': path, 'HOME': home, **(extra_env or {})}
  return subprocess.run(['bash', os.path.join(REPO, 'scripts', 'make_venv.sh'), venv],
                        env=env, capture_output=True, text=True, timeout=60)


def test_a_machine_with_only_python_310_gets_python_312_from_uv(tmp_path):
  """A Cloud TPU VM image: python3 is 3.10 and there is no uv. The set-up installs uv with
  the system pip (--user), has it install Python 3.12 and make the venv from it."""
  path, home, log = _machine(tmp_path, {})
  _script(tmp_path / 'bin' / 'python3', _python310_body(log))
  out = _run_make_venv(path, home, str(tmp_path / 'venv'))
  assert out.returncode == 0, out.stderr
  assert 'no Python 3.11-3.13 on this machine (python3 is Python 3.10' in out.stdout
  calls = log.read_text().splitlines()
  assert calls == ['python3 -m pip install --quiet --user uv==0.13.9',
                   'uv python install 3.12',
                   f'uv venv --seed --python 3.12 {tmp_path / "venv"}']
  assert os.access(tmp_path / 'venv' / 'bin' / 'python', os.X_OK)


def test_a_python_without_debians_venv_package_gets_its_venv_from_uv(tmp_path):
  """python3.12 is there but `-m venv` fails as it does without python3.12-venv (no
  ensurepip): uv makes the venv from that same interpreter."""
  path, home, log = _machine(tmp_path, {})
  bin_dir = tmp_path / 'bin'
  _script(bin_dir / 'python3.12', f'''if [[ "$1 $2" == "-m venv" ]]; then
  echo "The virtual environment was not created successfully because ensurepip is not"
  echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv package"
  exit 1
fi
[[ "$1" == -c ]] && exit 0   # the version check: a 3.12
echo "Python 3.12.3"''')
  _script(bin_dir / 'uv', _fake_uv_body(log))
  out = _run_make_venv(path, home, str(tmp_path / 'venv'))
  assert out.returncode == 0, out.stderr
  assert 'python3.12 -m venv failed (available.  On Debian/Ubuntu' in out.stderr
  assert log.read_text().splitlines() == [
      f'uv venv --seed --python {bin_dir / "python3.12"} {tmp_path / "venv"}']


def test_the_newest_supported_python_is_preferred_and_python_picks_one(tmp_path):
  """With 3.11 and 3.12 both installed the venv gets 3.12 (the default pins); PYTHON=...
  picks another; an unsupported PYTHON is refused with one line."""
  body = f'''if [[ "$1 $2" == "-m venv" ]]; then
  echo "$(basename "$0") $*" >> {tmp_path / 'commands.log'}; mkdir -p "$3/bin"; exit 0
fi
[[ "$1" == -c ]] && exit 0
echo "Python $(basename "$0")"'''
  path, home, log = _machine(tmp_path, {'python3.11': body, 'python3.12': body})
  assert _run_make_venv(path, home, str(tmp_path / 'a')).returncode == 0
  assert _run_make_venv(path, home, str(tmp_path / 'b'),
                        {'PYTHON': 'python3.11'}).returncode == 0
  assert log.read_text().splitlines() == [f'python3.12 -m venv {tmp_path / "a"}',
                                          f'python3.11 -m venv {tmp_path / "b"}']
  refused = _run_make_venv(path, home, str(tmp_path / 'c'), {'PYTHON': 'python3.9'})
  assert refused.returncode == 1
  assert refused.stderr.strip() == ('PYTHON=python3.9 is not a Python 3.11-3.13 this machine '
                                    'can run')


def test_the_tpu_script_sets_up_and_trains_on_a_python_310_worker(tmp_path):
  """scripts/tpu_vm_train.sh against a fake gcloud whose `tpu-vm scp` copies into the
  worker's home and whose `tpu-vm ssh --command` runs the command there, on a worker whose
  only python3 is 3.10: `make setup ACCEL=tpu` gets Python 3.12 from uv, installs
  requirements-tpu.txt into the venv, and training starts with the venv's Python."""
  worker = tmp_path / 'worker'
  worker.mkdir()
  path, home, log = _machine(worker, {})
  _script(worker / 'bin' / 'python3', _python310_body(log))
  local_bin = tmp_path / 'local_bin'
  _script(local_bin / 'gcloud', f'''echo "gcloud $*" >> {tmp_path / 'gcloud.log'}
args=("$@")
if [[ "$1 $2 $3 $4" == "compute tpus tpu-vm scp" ]]; then
  cp "$5" "{home}/${{6#*:~/}}"
elif [[ "$1 $2 $3 $4" == "compute tpus tpu-vm ssh" ]]; then
  for ((i = 0; i < ${{#args[@]}}; i++)); do
    [[ ${{args[i]}} == --command ]] && command=${{args[i+1]}}
  done
  cd "{home}" && env -i HOME="{home}" PATH="{path}" bash -c "$command"
fi''')
  env = dict(os.environ, PATH=f'{local_bin}:{os.environ["PATH"]}', BN_REPRO_ALLOW_DIRTY='1')
  out = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', 'my-tpu', 'us-central2-b',
                        'configs/bn_x30.py', 'gs://bucket/run', '--config.seed=3'],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  commit = subprocess.run(['git', 'rev-parse', '--short=12', 'HEAD'], cwd=REPO,
                          capture_output=True, text=True).stdout.strip()
  for _ in range(100):   # training starts detached
    calls = log.read_text().splitlines()
    if any('scripts/train.py' in call for call in calls):
      break
    subprocess.run(['sleep', '0.1'])
  assert calls[:3] == ['python3 -m pip install --quiet --user uv==0.13.9',
                       'uv python install 3.12', 'uv venv --seed --python 3.12 .venv']
  assert 'venv-python -m pip install --quiet -r requirements-tpu.txt' in calls
  assert calls[-1] == ('venv-python scripts/train.py --config configs/bn_x30.py --workdir '
                       'gs://bucket/run --config.seed=3')
  assert os.path.isdir(os.path.join(home, f'bn_repro-{commit}', 'logs'))


def test_the_tpu_script_passes_an_interpreter_to_the_workers_set_up():
  out = subprocess.run(['bash', 'scripts/tpu_vm_train.sh', '--dry_run', '--python', 'python3.12',
                        'my-tpu', 'zone', 'configs/bn_x30.py', 'gs://bucket/run'], cwd=REPO,
                       env=dict(os.environ, BN_REPRO_ALLOW_DIRTY='1'), capture_output=True,
                       text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert r'make\ setup\ ACCEL=tpu\ PYTHON=python3.12\)' in out.stdout
