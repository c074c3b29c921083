"""A folder of one's own images as a data set: the layout, gray and RGB, --size, masks through
augmentation, the decode cache and its invalidation, every bad input (one line, nothing written);
and (slow) the worked example of the README: export, phase 1, phase 3 with the folder's masks,
evaluate."""
import os
import re

import numpy as np
import pytest
from PIL import Image

import mydatagen
import mydatasets
import myfolders
from helpers import inprocess, one_line_error, script


def picture(path, shape, value=None, mode=None, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8) if value is None else \
        np.full(shape, value, np.uint8)
    Image.fromarray(a, mode).save(path)


def make_folder(root, classes=('cat', 'dog'), per_class=3, shape=(20, 24), tests=('test', 'test-field'), masks=False,
                ext='.png'):
    k = 0
    for split in ('train',) + tuple(tests):
        for c in classes:
            for i in range(per_class):
                picture(os.path.join(root, split, c, f'{c}{i}{ext}'), shape, seed=k)
                if masks:
                    m = np.zeros(shape[:2], np.uint8)
                    m[2:12, 3:15] = 255
                    os.makedirs(os.path.join(root, 'masks', split, c), exist_ok=True)
                    Image.fromarray(m).save(os.path.join(root, 'masks', split, c, f'{c}{i}.png'))
                k += 1
    return root


def test_layout_classes_and_named_test_sets(tmp_path):
    root = make_folder(str(tmp_path / 'd'), classes=('zebra', 'ant', 'moth'))
    data = mydatasets.dataset(root)
    assert data.class_names == ['ant', 'moth', 'zebra'] and data.classes == 3   # sorted folder names
    assert [n for n, _ in data.tests] == ['test', 'field']
    X, Y = data.train
    assert X.shape == (9, 20, 24, 1) and X.dtype == np.uint8 and Y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first = np.asarray(Image.open(os.path.join(root, 'train', 'ant', 'ant0.png')))
    np.testing.assert_array_equal(X[0, ..., 0], first)                  # the pixels as they are, uint8
    np.testing.assert_allclose(mydatagen.to_float(X)[0, ..., 0], first / 255, atol=1e-7)
    assert mydatasets.check_name(root) == root


def test_rgb_decided_by_the_images_and_size(tmp_path):
    root = make_folder(str(tmp_path / 'd'))
    picture(os.path.join(root, 'train', 'dog', 'colour.jpg'), (20, 24, 3))   # one RGB image: all RGB
    data = mydatasets.dataset(root)
    assert data.shape == (20, 24, 3)
    gray = np.asarray(Image.open(os.path.join(root, 'train', 'cat', 'cat0.png')))
    np.testing.assert_array_equal(data.train[0][0], np.repeat(gray[..., None], 3, -1))
    assert mydatasets.dataset(root, size=16).shape == (16, 16, 3)


def test_masks_follow_their_images_through_augmentation(tmp_path):
    root = make_folder(str(tmp_path / 'd'), masks=True, per_class=4)
    data = mydatasets.dataset(root, masks=True)
    M = data.masks['train']
    assert M.shape == (8, 20, 24, 1) and set(np.unique(M)) == {0, 1} and M[0, 5, 5, 0] == 1 and M[0, 0, 0, 0] == 0
    assert sorted(data.masks) == ['field', 'test', 'train']
    X = np.repeat(M, 1, -1) * np.uint8(255)   # images equal to their masks: the pairs must stay equal
    for x, m, _ in mydatagen.batches(X, data.train[1], 4, seed=3, masks=M,
                                     aug=mydatagen.Augment(brightness=(1, 1))).take(4):
        np.testing.assert_allclose(x.numpy(), m.numpy(), atol=1e-5)
        assert not np.array_equal(m.numpy(), M[:4].astype(np.float32))   # it did move


def test_cache_and_its_invalidation(tmp_path, monkeypatch):
    root = make_folder(str(tmp_path / 'd'))
    first = mydatasets.dataset(root).train[0].copy()

    def boom(*a, **k):
        raise AssertionError('decoded again')
    with monkeypatch.context() as m:
        m.setattr(myfolders, '_decode', boom)
        np.testing.assert_array_equal(mydatasets.dataset(root).train[0], first)   # from the cache
    changed = os.path.join(root, 'train', 'cat', 'cat1.png')
    picture(changed, (20, 24), value=7)
    os.utime(changed, ns=(1, 1))   # a new content and modification time
    again = mydatasets.dataset(root).train[0]
    assert (again[1] == 7).all() and np.array_equal(again[0], first[0])
    os.remove(os.path.join(root, 'train', 'dog', 'dog2.png'))   # a file fewer
    assert len(mydatasets.dataset(root).train[0]) == 5


BAD = {
    'no train folder': (lambda r: os.rename(os.path.join(r, 'train'), os.path.join(r, 'tr')), 'has no train/ folder'),
    'empty class folder': (lambda r: [os.remove(os.path.join(r, 'train', 'dog', f)) for f in os.listdir(os.path.join(r, 'train', 'dog'))],
                           r'train/dog holds no images'),
    'unknown test class': (lambda r: picture(os.path.join(r, 'test', 'cow', 'a.png'), (20, 24)), r'test/cow is a class that'),
    'no test set': (lambda r: [os.rename(os.path.join(r, d), os.path.join(r, 'x' + d)) for d in ('test', 'test-field')],
                    'has no test set'),
    'truncated image': (lambda r: open(os.path.join(r, 'test', 'cat', 'cat1.png'), 'r+b').truncate(60),
                        r'cannot (read|decode) image .*test/cat/cat1\.png'),
    'not an image': (lambda r: open(os.path.join(r, 'train', 'cat', 'cat2.png'), 'w').write('hello'),
                     r'cannot (read|decode) image .*train/cat/cat2\.png'),
    'sizes differ': (lambda r: picture(os.path.join(r, 'train', 'cat', 'big.png'), (30, 30)), r'different sizes .*--size'),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_folders(case, tmp_path):
    root = make_folder(str(tmp_path / 'd'))
    spoil, says = BAD[case]
    spoil(root)
    with pytest.raises(mydatasets.DataError) as e:
        mydatasets.dataset(root)
    assert re.search(says, str(e.value)) and '\n' not in str(e.value), str(e.value)


def test_bad_masks(tmp_path):
    root = make_folder(str(tmp_path / 'd'), masks=True)
    os.remove(os.path.join(root, 'masks', 'test-field', 'dog', 'dog1.png'))
    with pytest.raises(mydatasets.DataError, match=r'masks/test-field/dog/dog1\.png is missing'):
        mydatasets.dataset(root, masks=True)
    assert mydatasets.dataset(root).masks is None   # without masks asked for, none is needed
    picture(os.path.join(root, 'masks', 'test-field', 'dog', 'dog1.png'), (10, 10), value=255)
    with pytest.raises(mydatasets.DataError, match=r'mask .*dog1\.png is 10x10, its image .* is 24x20'):
        mydatasets.dataset(root, masks=True, size=16)


@pytest.mark.slow   # runs the scripts as subprocesses (TensorFlow starts in each)
def test_scripts_refuse_bad_folders_in_one_line(tmp_path):
    root = make_folder(str(tmp_path / 'd'))
    picture(os.path.join(root, 'train', 'cat', 'big.png'), (30, 30))
    out = tmp_path / 'out'
    out.mkdir()
    r = script('train1.py', root, '--output', out / 'p1.keras')
    assert re.search('different sizes', one_line_error(r)) and os.listdir(out) == []
    r = script('train1.py', str(tmp_path / 'nothing'), '--output', out / 'p1.keras')
    assert 'unknown data set' in one_line_error(r) and r.returncode == 2
    r = script('train3.py', root, 'p1.keras', 'heuristic', 'otsu', 'real', '--output', out / 'p3.keras')
    assert '--backgrounds DIR' in one_line_error(r) and os.listdir(out) == []


def test_background_photographs(tmp_path):
    folder = tmp_path / 'bg'
    picture(str(folder / 'a.jpg'), (40, 50, 3), seed=1)
    picture(str(folder / 'small.png'), (10, 12, 3), seed=2)   # scaled up to be cropped from
    crops = myfolders.photos(str(folder), 32, 1, seed=4)
    got = [next(crops) for _ in range(6)]
    assert all(c.shape == (32, 32, 1) and c.dtype == np.float32 and 0 <= c.min() and c.max() <= 1 for c in got)
    assert not np.array_equal(got[0], got[1])
    again = myfolders.photos(str(folder), 32, 1, seed=4)
    np.testing.assert_array_equal(next(again), got[0])   # seeded
    with pytest.raises(mydatasets.DataError, match='no photographs'):
        next(myfolders.photos(str(tmp_path / 'none'), 32, 1))


@pytest.mark.slow
def test_worked_example(real_data, tmp_path):
    """The README's worked example on a small folder: Fashion-MNIST exported with its test set
    under the six backgrounds and masks from the images; phase 1; phase 3 with the folder's
    masks; evaluate.py on the folder; the class names travel with the models."""
    root = tmp_path / 'fashion'
    r = script('mydatasets.py', 'fashionmnist_backgrounds', '--export', root, '--masks', '--subset', 512,
               '--test-subset', 64)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(root)) == ['masks', 'test', 'test-border', 'test-checkerboard', 'test-circumferences',
                                        'test-clock', 'test-salt_pepper', 'test-stripes', 'train']
    assert sorted(os.listdir(root / 'train')) == [str(c) for c in range(10)]
    small = ['--epochs', 1, '--batchsize', 32, '--seed', 1]
    r = script('train1.py', root, *small, '--output', tmp_path / 'p1.keras')
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'p1-classes.txt').read_text().split() == [str(c) for c in range(10)]
    r = script('train3.py', root, tmp_path / 'p1.keras', 'masks', 'otsu', 'adv', *small, '--output', tmp_path / 'p3.keras')
    assert r.returncode == 0, r.stderr[-2000:]
    phase3 = [float(v) for v in r.stdout.strip().splitlines()[-1].split(',')[1:]]
    r = inprocess('evaluate.py', root, tmp_path / 'p3.keras', '--names')   # (in-process: a quick run)
    assert r.returncode == 0, r.stderr[-2000:]
    header, values = r.stdout.strip().splitlines()
    assert header.split(',')[:3] == ['train', 'test', 'border'] and [float(v) for v in values.split(',')] == phase3
    # a folder whose classes are other ones: refused in one line
    os.rename(root / 'train' / '9', root / 'train' / 'nine')
    os.rename(root / 'test' / '9', root / 'test' / 'nine')
    for d in os.listdir(root):
        if d.startswith('test-'):
            os.rename(root / d / '9', root / d / 'nine')
    r = inprocess('evaluate.py', root, tmp_path / 'p3.keras')
    assert 'was trained on the classes' in one_line_error(r)


def test_disk_array_reads_rows_as_asked(tmp_path, monkeypatch):
    """A large folder's images stay on disk (the cache's .npy), read a few rows at a time."""
    import mydownload
    a = np.random.default_rng(0).integers(0, 256, (50, 6, 5, 3), dtype=np.uint8)
    np.save(tmp_path / 'a.npy', a)
    d = mydownload.DiskArray(str(tmp_path / 'a.npy'))
    assert d.shape == a.shape and d.dtype == np.uint8 and len(d) == 50 and d.nbytes == a.nbytes
    np.testing.assert_array_equal(d[7], a[7])
    np.testing.assert_array_equal(d[-1], a[-1])
    np.testing.assert_array_equal(d[[3, 1, 40]], a[[3, 1, 40]])
    view = d[10:20]
    assert isinstance(view, mydownload.DiskArray) and view.shape == (10, 6, 5, 3)
    np.testing.assert_array_equal(np.asarray(view), a[10:20])
    np.testing.assert_array_equal(view[2:4].astype(np.float32), a[12:14].astype(np.float32))
    np.testing.assert_array_equal(d[::7], a[::7])
    # a folder data set over the limit comes back on disk, and trains and evaluates as well
    monkeypatch.setattr(mydownload, 'ON_DISK', 1000)
    root = make_folder(str(tmp_path / 'd'), per_class=5)
    data = mydatasets.dataset(root)
    assert isinstance(data.train[0], mydownload.DiskArray)
    first = next(iter(mydatagen.batches(*data.train, 4, seed=0, augment_data=False)))[0].numpy()
    assert first.dtype == np.float32 and first.shape == (4, 20, 24, 1) and first.max() <= 1
    import myrun
    monkeypatch.setattr(mydatagen, 'IN_GRAPH', 1000)   # the pipeline's numpy path
    clf = mymodels_classifier((20, 24, 1))
    acc = myrun.Evaluator(data.sets, 3)(clf)
    assert set(acc) == {'train', 'test', 'field'} and all(0 <= v <= 1 for v in acc.values())


def mymodels_classifier(shape):
    import keras
    x = inp = keras.Input(shape)
    return keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
