"""The real MNIST and Fashion-MNIST of ../shared/datasets, through mydatasets."""
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

import mybackgrounds
import mydatasets
import mydownload

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def snapshot(d):
    return {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns
            for r, _, fs in os.walk(d) for f in fs}


@pytest.fixture(scope='module')
def mnist_bg(real_data):
    before = snapshot(real_data)
    sets = mydatasets.load('mnist_backgrounds')
    assert snapshot(real_data) == before, 'something was written into the (read-only) data folder'
    return sets


def check_set(X, Y, n, counts=None):
    assert X.shape == (n, 32, 32, 1) and X.dtype == np.float32
    assert Y.shape == (n,) and Y.dtype == np.int32
    assert X.min() == 0.0 and X.max() == 1.0
    if counts is not None:
        assert np.bincount(Y, minlength=10).tolist() == counts


def test_mnist(real_data):
    (Xtr, Ytr), ts = mydatasets.load('mnist')
    check_set(Xtr, Ytr, 60000, MNIST_TRAIN_COUNTS)
    assert len(ts) == 1
    check_set(*ts[0], 10000, MNIST_TEST_COUNTS)
    # 28x28 padded by 2 px of zeros on each side
    assert not Xtr[:, :2].any() and not Xtr[:, -2:].any() and not Xtr[:, :, :2].any() and not Xtr[:, :, -2:].any()
    # the values are the raw bytes / 255
    raw = mydatasets.read_idx(os.path.join(real_data, 'mnist', 't10k-images-idx3-ubyte.gz'))
    np.testing.assert_array_equal(ts[0][0][:50, 2:30, 2:30, 0], raw[:50].astype(np.float32) / 255)


def test_fashionmnist(real_data):
    (Xtr, Ytr), [(Xts, Yts)] = mydatasets.load('fashionmnist')
    check_set(Xtr, Ytr, 60000, [6000] * 10)
    check_set(Xts, Yts, 10000, [1000] * 10)


def test_mnist_backgrounds(mnist_bg):
    (Xtr, Ytr), ts = mnist_bg
    check_set(Xtr, Ytr, 60000, MNIST_TRAIN_COUNTS)
    assert len(ts) == 7
    clean = ts[0][0]
    for (X, Y), f in zip(ts[1:], mybackgrounds.BACKGROUNDS.values()):
        check_set(X, Y, 10000, MNIST_TEST_COUNTS)
        np.testing.assert_array_equal(Y, ts[0][1])
        b = f(32)
        for i in [0, 1, 7, 4242, 9999]:
            keep = binary_dilation(clean[i, ..., 0] > 0, disk(2).astype(bool))
            np.testing.assert_array_equal(X[i, ..., 0][keep], clean[i, ..., 0][keep])
            np.testing.assert_array_equal(X[i, ..., 0][~keep], b[~keep])


def test_the_scripts_data_hold_the_same_images_as_uint8(mnist_bg):
    """dataset() (what every script trains and evaluates on) keeps each set as uint8, a quarter of
    load()'s float32 memory, and the model's conversion gives load()'s images back to the bit;
    the rimless backgrounds pasted behind those uint8 images are the ones pasted behind floats."""
    import mydatagen
    (Xtr, _), ts = mnist_bg
    data = mydatasets.dataset('mnist_backgrounds')
    for X, (U, _) in zip([Xtr] + [X for X, _ in ts], [data.train] + [s for _, s in data.tests]):
        assert U.dtype == np.uint8 and U.shape == X.shape
        assert np.array_equal(mydatagen.to_float(U), X)
    nohalo = mydatasets.with_nohalo(data).tests[7:]
    for (n, (U, Y)), (X, _) in zip(nohalo, mydatasets.with_backgrounds(ts[0][0], ts[0][1], halo=0)[1:]):
        assert U.dtype == np.uint8 and np.array_equal(mydatagen.to_float(U), X), n


def test_fashionmnist_backgrounds(real_data):
    (Xtr, Ytr), ts = mydatasets.load('fashionmnist_backgrounds')
    check_set(Xtr, Ytr, 60000, [6000] * 10)
    assert len(ts) == 7
    clean = ts[0][0]
    b = mybackgrounds.clock(32)
    X = ts[5][0]
    for i in [3, 500]:
        keep = binary_dilation(clean[i, ..., 0] > 0, disk(2).astype(bool))
        np.testing.assert_array_equal(X[i, ..., 0][keep], clean[i, ..., 0][keep])
        np.testing.assert_array_equal(X[i, ..., 0][~keep], b[~keep])


def test_mnist_noises(mnist_bg):
    (Xtr, Ytr), ts = mydatasets.load('mnist_noises')
    check_set(Xtr, Ytr, 60000, MNIST_TRAIN_COUNTS)
    assert len(ts) == 20
    clean = mnist_bg[1][0][0]
    np.testing.assert_array_equal(ts[0][0], clean)          # rate 0: nothing added
    outside = ~mybackgrounds.foreground(clean[:100])
    fill = [X[:100, ..., 0][outside].mean() for X, _ in ts]
    assert all(a <= b for a, b in zip(fill, fill[1:]))      # more salt as the rate grows
    assert fill[-1] == 1.0                                   # rate 1: all white outside the digit
    np.testing.assert_array_equal(ts[15][0], mybackgrounds.apply_background(clean, mybackgrounds.salt_pepper(32, 0.6)))


def test_second_load_uses_array_cache(real_data, monkeypatch):
    mydatasets.load('mnist')   # built (or already there)

    def boom(*a, **k):
        raise AssertionError('raw files decoded again')
    monkeypatch.setattr(mydatasets, 'read_idx', boom)
    (Xtr, _), _ = mydatasets.load('mnist')
    assert Xtr.shape == (60000, 32, 32, 1)


def test_truncated_cache_file_rebuilt(real_data, monkeypatch):
    mydatasets.load('mnist')
    d = os.path.join(mydownload.cache_dir(), 'derived')
    [f] = [f for f in os.listdir(d) if f.startswith('mnist-')]
    with open(os.path.join(d, f, 'a0.npy'), 'r+b') as fh:   # the training images
        fh.truncate(1000)
    (Xtr, Ytr), _ = mydatasets.load('mnist')
    assert Xtr.shape == (60000, 32, 32, 1) and np.bincount(Ytr).tolist() == MNIST_TRAIN_COUNTS


def test_unknown_name():
    with pytest.raises(mydatasets.DataError, match='valid names: .*mnist_backgrounds'):
        mydatasets.load('mnits')


def test_registry_has_every_name():
    want = {'mnist', 'fashionmnist', 'cifar10', 'stl10', 'svhn', 'synthdigits', 'gtsrb', 'synsigns',
            'dogsvscatsredux', 'prates', 'prates_masks', 'prates_backgen', 'cifar10_stl10', 'stl10_cifar10',
            'gtsrb_synsigns', 'svhn_synthdigits', 'synthdigits_svhn', 'mnist_backgrounds',
            'fashionmnist_backgrounds', 'mnist_noises', 'fashionmnist_noises'}
    ours = {'mnist_nohalo', 'fashionmnist_nohalo', 'mnist_validation', 'fashionmnist_validation'}
    assert set(mydatasets.NAMES) == want | ours
    assert all(hasattr(mydatasets, n) for n in want | ours)


def test_nohalo_pastes_up_to_the_ink(mnist_bg):
    (_, _), ts = mnist_bg
    data = mydatasets.with_nohalo(mydatasets.Data('mnist_backgrounds', mnist_bg[0], list(zip('abcdefg', ts))))
    names = [n for n, _ in data.tests]
    assert names[7:] == [f'{b}_nohalo' for b in mybackgrounds.BACKGROUNDS]
    clean = ts[0][0]
    for (_, (X, _)), f in zip(data.tests[7:], mybackgrounds.BACKGROUNDS.values()):
        b, X = f(32), mydatasets.LEVELS[X]   # (a Data holds them as uint8)
        for i in [0, 7, 4242]:
            ink = clean[i, ..., 0] > 0
            np.testing.assert_array_equal(X[i, ..., 0][ink], clean[i, ..., 0][ink])
            np.testing.assert_array_equal(X[i, ..., 0][~ink], b[~ink])   # the background reaches the ink
    rim = mybackgrounds.foreground(clean[:50]) & ~(clean[:50, ..., 0] > 0)
    assert rim.any() and (data.tests[1][1][0][:50, ..., 0][rim] == 0).all()   # the paper's test: a black rim
    with pytest.raises(mydatasets.DataError, match='grayscale'):
        rgb = np.zeros((4, 32, 32, 3), np.float32), np.zeros(4, np.int32)
        mydatasets.with_nohalo(mydatasets.Data('x', rgb, [('test', rgb)]))


def test_validation_sets_hold_out_the_end_of_the_training_set(real_data):
    (Xall, Yall), _ = mydatasets.load('mnist')
    data = mydatasets.dataset('mnist_validation')
    data.train, data.tests = (mydatasets.LEVELS[data.train[0]], data.train[1]), \
        [(n, (mydatasets.LEVELS[X], Y)) for n, (X, Y) in data.tests]   # (a Data holds them as uint8)
    Xtr, Ytr = data.train
    assert len(Xtr) == 55000 and np.array_equal(Xtr, Xall[:55000]) and np.array_equal(Ytr, Yall[:55000])
    names = [n for n, _ in data.tests]
    assert names == ['clean'] + list(mybackgrounds.VALIDATION) + [f'{n}_rim' for n in mybackgrounds.VALIDATION]
    clean = data.tests[0][1][0]
    np.testing.assert_array_equal(clean, Xall[55000:])
    ink = clean[..., 0] > 0
    k = len(mybackgrounds.VALIDATION)
    for (n, (X, Y)), f in zip(data.tests[1:1 + k], mybackgrounds.VALIDATION.values()):
        np.testing.assert_array_equal(Y, Yall[55000:])
        np.testing.assert_array_equal(X[..., 0][ink], clean[..., 0][ink])
        np.testing.assert_array_equal(X[..., 0][~ink], np.broadcast_to(f(32), ink.shape)[~ink])
    rim = mybackgrounds.foreground(clean) & ~ink
    assert len(data.tests) == 1 + 2 * k
    for _, (X, _) in data.tests[1 + k:]:
        assert (X[..., 0][rim] == 0).all()


def test_cli_montage(real_data, tmp_path):
    import imageio.v3 as iio
    out = tmp_path / 'm.png'
    r = subprocess.run([sys.executable, 'mydatasets.py', 'mnist_backgrounds', '--output', str(out), '--n', '4'],
                       cwd=os.path.dirname(mydatasets.__file__), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'counts {0: 980, 1: 1135' in r.stdout and 'salt_pepper' in r.stdout
    img = iio.imread(out)
    assert img.shape == (8 * 34 - 2, 4 * 34 - 2)   # 8 rows (train + 7 tests) of 4 images


@pytest.mark.slow   # runs the scripts as subprocesses (TensorFlow starts in each)
def test_cli_unknown_and_offline(tmp_path):
    env = dict(os.environ, BIAL_DATA_PATH=str(tmp_path), BIAL_CACHE=str(tmp_path / 'c'),
               BIAL_MIRROR='http://127.0.0.1:9')   # port 9: nothing listens there
    run = lambda *a: subprocess.run([sys.executable, 'mydatasets.py', *a, '--output', str(tmp_path / 'x.png')],
                                    cwd=os.path.dirname(mydatasets.__file__), capture_output=True, text=True, env=env)
    r = run('nope')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and 'valid names:' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run('mnist')
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert 'train-images-idx3-ubyte.gz' in line and str(tmp_path) in line and 'http://127.0.0.1:9/mnist/' in line
    assert not (tmp_path / 'x.png').exists()
