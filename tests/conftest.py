"""Shared test set-up: the real data in ../shared/datasets, a private cache, TensorFlow started as
the scripts start it, and one small trained chain that the slow tests share."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'datasets')
if os.path.isdir(SHARED):
    os.environ.setdefault('BIAL_DATA_PATH', SHARED)
# Relative folders (CI sets ../shared/datasets) are made absolute here: the slow tests run the
# scripts in other working directories (a fresh copy of the repository), where they would not resolve.
os.environ['BIAL_DATA_PATH'] = os.pathsep.join(
    os.path.abspath(d) for d in os.environ.get('BIAL_DATA_PATH', '').split(os.pathsep) if d)

import mycli  # noqa: E402

mycli.start_tensorflow()   # before any test module imports keras: oneDNN on, as in the scripts


def _real_data_dir():
    for d in os.environ.get('BIAL_DATA_PATH', '').split(os.pathsep):
        if d and os.path.isdir(os.path.join(d, 'mnist')):
            return os.path.abspath(d)
    return None


REAL_DATA = _real_data_dir()


@pytest.fixture(scope='session', autouse=True)
def private_cache(tmp_path_factory):
    """Every test session gets its own empty cache: nothing from ~/.keras is used or touched."""
    d = tmp_path_factory.mktemp('cache')
    os.environ['BIAL_CACHE'] = str(d)
    os.environ.pop('BIAL_MIRROR', None)
    return d


@pytest.fixture(scope='session')
def real_data():
    """The folder with the real MNIST/Fashion-MNIST. Never skipped in CI: a missing copy fails."""
    if REAL_DATA is None:
        if os.environ.get('CI'):
            pytest.fail('the real data sets (../shared/datasets) are missing; set BIAL_DATA_PATH')
        pytest.skip('real data sets not found (set BIAL_DATA_PATH)')
    return REAL_DATA


def fresh_copy(dest):
    """The repository's tracked and unignored files, copied as a clone would have them (no runs/,
    no .venv, no caches)."""
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split('\n')
    for f in filter(None, files):
        if os.path.isfile(os.path.join(ROOT, f)):
            os.makedirs(os.path.join(dest, os.path.dirname(f)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), os.path.join(dest, f))
    return dest


@pytest.fixture(scope='session')
def smoke_chain(real_data, tmp_path_factory):
    """`python reproduce.py mnist --recipe smoke` exactly as a new user types it, with no --output,
    in a fresh copy of the repository (where runs/ does not exist): every phase's model, log and
    the table, in COPY/runs/mnist-smoke/. The slow tests share it instead of training their own."""
    copy = fresh_copy(tmp_path_factory.mktemp('clone'))
    assert not (copy / 'runs').exists()
    r = subprocess.run([sys.executable, 'reproduce.py', 'mnist', '--recipe', 'smoke'], cwd=copy,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return {'dir': copy / 'runs' / 'mnist-smoke', 'stdout': r.stdout, 'stderr': r.stderr, 'copy': copy}


@pytest.fixture(scope='session')
def seed1_chain(real_data, tmp_path_factory):
    """`reproduce.py mnist --recipe smoke --seed 1` killed (SIGKILL) twice at random, seeded
    moments, then run again to the end. The fault test checks it; the two-seed table reuses it as
    seed 1."""
    import random
    from helpers import run
    d = tmp_path_factory.mktemp('seed1') / 'run'
    cmd = [sys.executable, os.path.join(ROOT, 'reproduce.py'), 'mnist', '--recipe', 'smoke', '--seed', '1',
           '--output', str(d)]
    rng = random.Random('kills-reproduce')
    for _ in range(2):
        run(cmd, kill_after=rng.uniform(4, 30))
    rc, out, err = run(cmd)
    return {'dir': d, 'rc': rc, 'stdout': out, 'stderr': err}
