"""Shared test set-up: the real data in ../shared/datasets, a private cache, quiet TensorFlow."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
SHARED = os.path.join(os.path.dirname(ROOT), 'shared', 'datasets')
if os.path.isdir(SHARED):
    os.environ.setdefault('BIAL_DATA_PATH', SHARED)


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
