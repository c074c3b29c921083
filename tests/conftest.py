"""Shared test set-up: the real data in ../shared/datasets, a private cache, TensorFlow started as
the scripts start it, and the small trained chains that the slow tests share (built in the
background from the moment the tests are collected)."""
import concurrent.futures
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

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


def pytest_configure(config):
    """Every test session gets its own empty cache (removed at its end): nothing from ~/.keras is
    used or touched. Set here, before any fixture: the shared chains start after collection."""
    config.bial_cache = tempfile.mkdtemp(prefix='bial-test-cache-')
    os.environ['BIAL_CACHE'] = config.bial_cache
    os.environ.pop('BIAL_MIRROR', None)


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


# --- the shared trained chains --------------------------------------------------------------
# They are built one after the other in a background thread that starts as soon as the tests are
# collected (when a selected test needs them), so that they train while the unit tests and the
# first slow tests run: on 2 cores, much of a chain is one-threaded (TensorFlow's start-up and
# tracing in each phase's process). A fixture waits for its chain (or builds it, when not started).

CHAINS = {}   # name: Future
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix='chains')


def build_smoke_chain(base, env):
    """`python reproduce.py mnist --recipe smoke` exactly as a new user types it, with no --output,
    in a fresh copy of the repository (where runs/ does not exist): every phase's model, log and
    the table, in COPY/runs/mnist-smoke/."""
    from helpers import run
    copy = fresh_copy(pathlib.Path(tempfile.mkdtemp(prefix='clone-', dir=base)))
    assert not (copy / 'runs').exists()
    rc, out, err = run([sys.executable, 'reproduce.py', 'mnist', '--recipe', 'smoke'], cwd=copy, env=env)
    assert rc == 0, err[-3000:]
    return {'dir': copy / 'runs' / 'mnist-smoke', 'stdout': out, 'stderr': err, 'copy': copy}


def build_seed1_chain(base, env):
    """`reproduce.py mnist --recipe smoke --seed 1` killed (SIGKILL) twice at random, seeded
    moments, then run again to the end."""
    import random
    from helpers import run
    d = pathlib.Path(tempfile.mkdtemp(prefix='seed1-', dir=base)) / 'run'
    cmd = [sys.executable, os.path.join(ROOT, 'reproduce.py'), 'mnist', '--recipe', 'smoke', '--seed', '1',
           '--output', str(d)]
    rng = random.Random('kills-reproduce')
    for _ in range(2):
        run(cmd, kill_after=rng.uniform(4, 30), env=env)
    rc, out, err = run(cmd, env=env)
    return {'dir': d, 'rc': rc, 'stdout': out, 'stderr': err}


def build_sequential_chain(base, env):
    """The smoke chain again with --jobs 1 (one phase after the other), to compare with the
    default's two side by side; while it runs, the same command is started again on its folder
    (it must stop at once, naming the first, and leave the first's table as a lone run's)."""
    import time
    from helpers import RUNNING, run
    d = pathlib.Path(tempfile.mkdtemp(prefix='sequential-', dir=base)) / 'run'
    cmd = [sys.executable, os.path.join(ROOT, 'reproduce.py'), 'mnist', '--recipe', 'smoke', '--jobs', '1',
           '--output', str(d)]
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    RUNNING.add(first)
    while not (d / 'run.lock').exists() and first.poll() is None:
        time.sleep(0.05)
    rc, _, err = run(cmd, env=env)   # the second run, on the same folder
    second = {'rc': rc, 'stderr': err, 'first_running': first.poll() is None, 'first_pid': first.pid}
    out, err = first.communicate()
    RUNNING.discard(first)
    assert first.returncode == 0, err[-3000:]
    return {'dir': d, 'second': second}


def build_biased_chain(base, env):
    """`reproduce.py biased_mnist --recipe smoke --rho 0.99`: every Biased-MNIST row at one rho."""
    from helpers import run
    d = pathlib.Path(tempfile.mkdtemp(prefix='biased-', dir=base)) / 'bm'
    rc, out, err = run([sys.executable, os.path.join(ROOT, 'reproduce.py'), 'biased_mnist', '--recipe', 'smoke',
                        '--rho', '0.99', '--output', str(d)], env=env)
    return {'dir': d, 'rc': rc, 'stdout': out, 'stderr': err}


def build_benchmark_run(base, env):
    """`benchmark.py --quick` (its figures are not asserted, so it may run beside the tests)."""
    from helpers import run
    out = pathlib.Path(tempfile.mkdtemp(prefix='bench-', dir=base)) / 'bench.json'
    rc, stdout, err = run([sys.executable, os.path.join(ROOT, 'benchmark.py'), '--quick', '--output', str(out)],
                          env=env)
    return {'json': out, 'rc': rc, 'stdout': stdout, 'stderr': err}


# in the order they are built; the last two are not chains the tests share, but end-to-end runs
# that need nothing else: built here, they overlap the tests that run meanwhile
BUILDERS = {'smoke_chain': build_smoke_chain, 'seed1_chain': build_seed1_chain,
            'sequential_chain': build_sequential_chain, 'biased_chain': build_biased_chain,
            'benchmark_run': build_benchmark_run}


def pytest_collection_finish(session):
    if REAL_DATA is None:
        return
    wanted = set().union(*(item.fixturenames for item in session.items)) if session.items else set()
    base = session.config.bial_chains = tempfile.mkdtemp(prefix='bial-test-chains-')
    env = dict(os.environ)   # as it is now: the tests that run meanwhile may change os.environ
    for name in BUILDERS:
        if name in wanted:
            CHAINS[name] = _pool.submit(BUILDERS[name], base, env)


def pytest_unconfigure(config):
    """Stop a chain still training (the session ended early) and remove the session's folders."""
    import signal
    import helpers
    helpers.STOPPED = True
    for f in CHAINS.values():
        f.cancel()
    for p in list(helpers.RUNNING):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    _pool.shutdown(wait=True)
    for d in (getattr(config, 'bial_cache', None), getattr(config, 'bial_chains', None)):
        if d:
            shutil.rmtree(d, ignore_errors=True)


def chain(name, tmp_path_factory):
    if name not in CHAINS:   # not started at collection: build it now
        CHAINS[name] = _pool.submit(BUILDERS[name], str(tmp_path_factory.mktemp(name)), dict(os.environ))
    return CHAINS[name].result()


@pytest.fixture(scope='session')
def smoke_chain(real_data, tmp_path_factory):
    """The smoke chain (build_smoke_chain): the slow tests share it instead of training their own."""
    return chain('smoke_chain', tmp_path_factory)


@pytest.fixture(scope='session')
def seed1_chain(real_data, tmp_path_factory):
    """The seed-1 chain, killed twice (build_seed1_chain): the fault test checks it; the two-seed
    table reuses it as seed 1."""
    return chain('seed1_chain', tmp_path_factory)


@pytest.fixture(scope='session')
def sequential_chain(real_data, tmp_path_factory):
    """The smoke chain trained one phase at a time (build_sequential_chain)."""
    return chain('sequential_chain', tmp_path_factory)


@pytest.fixture(scope='session')
def biased_chain(real_data, tmp_path_factory):
    """Biased-MNIST's smoke run (build_biased_chain)."""
    return chain('biased_chain', tmp_path_factory)


@pytest.fixture(scope='session')
def benchmark_run(real_data, tmp_path_factory):
    """benchmark.py --quick's run (build_benchmark_run)."""
    return chain('benchmark_run', tmp_path_factory)
