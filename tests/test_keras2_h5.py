"""Checkpoints of the published code (Keras 2, .h5) load in every script. The files are written
here by tf_keras (Keras 2) with the published architectures: Lambda layers in VGG19, a
LeakyReLU layer passed as an activation in the generator."""
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, inprocess, script

KINDS = {'clf': 'classifier', 'unet': 'unet', 'gen': 'gen', 'vgg': 'classifier'}


@pytest.fixture(scope='module')
def keras2(tmp_path_factory):
    d = tmp_path_factory.mktemp('keras2')
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'make_keras2_models.py'), str(d)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return d


@pytest.mark.parametrize('name', sorted(KINDS))
def test_load_predicts_as_keras2(keras2, name):
    import mymodels
    m = mymodels.load(str(keras2 / f'{name}.h5'), KINDS[name])
    x, y = np.load(keras2 / f'{name}-x.npy'), np.load(keras2 / f'{name}-y.npy')
    np.testing.assert_allclose(m.predict(x, verbose=0), y, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_scripts_accept_keras2_files(keras2, real_data, tmp_path):
    r = inprocess('evaluate.py', 'mnist_backgrounds', keras2 / 'clf.h5', '--subset', 100, '--test-subset', 50)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().split(',')) == 8
    r = script('train3.py', 'mnist_backgrounds', keras2 / 'clf.h5', keras2 / 'unet.h5', 'otsu', 'adv',
               '--epochs', 1, '--subset', 64, '--test-subset', 32, '--batchsize', 32, '--output', tmp_path / 'p3.h5')
    assert r.returncode == 0, r.stderr
    assert (tmp_path / 'p3.h5').exists() and (tmp_path / 'p3-back.h5').exists()
    r = inprocess('evaluate.py', 'mnist_backgrounds', tmp_path / 'p3.h5', '--subset', 100, '--test-subset', 50)
    assert r.returncode == 0, r.stderr
    r = inprocess('evaluate_seg.py', 'mnist_backgrounds', keras2 / 'unet.h5', '--subset', 5, '--output', tmp_path / 'seg')
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(tmp_path / 'seg')) == 5
