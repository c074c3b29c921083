"""Augmentation in the graph: identity, the published geometry, ranges, seeds, masks, batching."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

import mydatagen
from mydatagen import Augment


def keras2_reference(x, theta, dx, dy, shear, flip):
    """What Keras 2.x's ImageDataGenerator did to one image (H, W, C), for the given parameters
    (degrees; shifts in pixels): rotation, shift, shear matrices in (x=col, y=row) order, about
    the centre, scipy's affine_transform with order 1 and 'nearest' fill, then the flip."""
    H, W = x.shape[:2]
    t, sh = math.radians(theta), math.radians(shear)
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]])
    shr = np.array([[1, -math.sin(sh), 0], [0, math.cos(sh), 0], [0, 0, 1]])
    ox, oy = W / 2 - 0.5, H / 2 - 0.5
    m = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]]) @ rot @ shift @ shr @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]])
    m = m[[1, 0]][:, [1, 0, 2]]   # to (row, col) order for scipy
    out = np.stack([ndimage.affine_transform(x[..., c], m[:, :2], m[:, 2], order=1, mode='nearest')
                    for c in range(x.shape[-1])], -1)
    return out[:, ::-1] if flip else out


def run(images, theta, dx, dy, shear, flip, gain=1.0):
    n = len(images)
    p = {k: tf.constant(np.full(n, v, np.float32)) for k, v in
         dict(theta=math.radians(theta), dx=dx, dy=dy, shear=math.radians(shear), flip=float(flip)).items()}
    H, W = images.shape[1:3]
    return mydatagen.warp(tf.constant(images), mydatagen.matrices(p, H, W)).numpy()


@pytest.mark.parametrize('params', [(10, 0, 0, 0, 0), (-15, 3.2, -4.1, 0.3, 0), (7, -2.5, 1.5, -0.3, 1),
                                    (0, 0, 0, 0, 1), (0, 4.8, 0, 0, 0), (14, 0, 0, 20, 1)])
def test_matches_published_geometry(params):
    rng = np.random.default_rng(0)
    X = rng.random((2, 32, 32, 3)).astype(np.float32)
    got = run(X, *params)
    for x, g in zip(X, got):
        np.testing.assert_allclose(g, keras2_reference(x, *params), atol=2e-4)


def test_identity_when_ranges_are_zero():
    X = np.random.default_rng(1).random((16, 32, 32, 1)).astype(np.float32)
    np.testing.assert_array_equal(mydatagen.augment(X, [1, 2], aug=Augment.none()).numpy(), X)


def test_flips_half_the_time_and_mirror_exactly():
    X = np.random.default_rng(2).random((2000, 16, 16, 1)).astype(np.float32)
    Z = mydatagen.augment(X, [3, 4], aug=Augment(0, 0, 0, 0.5, (1, 1))).numpy()
    flipped = np.array([np.array_equal(z, x[:, ::-1]) for x, z in zip(X, Z)])
    same = np.array([np.array_equal(z, x) for x, z in zip(X, Z)])
    assert (flipped | same).all()
    assert 0.45 < flipped.mean() < 0.55


def point_image(n, H, y, x):
    X = np.zeros((n, H, H, 1), np.float32)
    X[:, y, x] = 1
    return X


def centroids(Z):
    w = Z[..., 0]
    ys, xs = np.mgrid[:Z.shape[1], :Z.shape[2]]
    s = w.sum((1, 2))
    return (w * ys).sum((1, 2)) / s, (w * xs).sum((1, 2)) / s


def test_rotation_within_range():
    H, c = 33, 16   # odd side: the centre is a pixel
    X = point_image(1000, H, c, c + 12)
    Z = mydatagen.augment(X, [5, 6], aug=Augment(15, 0, 0, 0, (1, 1))).numpy()
    cy, cx = centroids(Z)
    ang = np.degrees(np.arctan2(cy - c, cx - c))
    assert np.abs(ang).max() <= 15.5 and np.abs(ang).max() > 13
    assert ang.min() < -10 and ang.max() > 10   # both directions


def test_shift_within_range():
    H = 32
    X = point_image(1000, H, 16, 16)
    Z = mydatagen.augment(X, [7, 8], aug=Augment(0, 0.15, 0, 0, (1, 1))).numpy()
    cy, cx = centroids(Z)
    for d in (cy - 16, cx - 16):
        assert np.abs(d).max() <= 0.15 * H + 1e-3 and np.abs(d).max() > 0.13 * H


def test_shear_is_in_degrees():
    H, c = 33, 16
    X = point_image(1000, H, c + 12, c)
    Z = mydatagen.augment(X, [9, 10], aug=Augment(0, 0, 0.3, 0, (1, 1))).numpy()
    cy, cx = centroids(Z)
    limit = 12 * math.sin(math.radians(0.3))      # 0.063 px: 0.3 degrees, not 0.3 radians
    assert np.abs(cx - c).max() <= limit + 1e-4 and np.abs(cx - c).max() > 0.8 * limit


def test_brightness_and_clip():
    X = np.random.default_rng(3).random((500, 8, 8, 1)).astype(np.float32)
    X[:, 0, 0] = 1.0
    Z = mydatagen.augment(X, [1, 1], aug=Augment(0, 0, 0, 0, (0.8, 1.2))).numpy()
    assert Z.min() >= 0 and Z.max() <= 1
    gain = Z[:, 1:, 1:].sum((1, 2, 3)) / X[:, 1:, 1:].sum((1, 2, 3))
    assert 0.8 <= gain.min() < 0.82 and 1.0 < gain.max() <= 1.2 + 1e-5
    Z = mydatagen.augment(X, [1, 2]).numpy()   # the full augmentation
    assert Z.min() >= 0 and Z.max() <= 1 and (Z == 1).any()


def test_same_seed_same_batch():
    X = np.random.default_rng(4).random((64, 32, 32, 1)).astype(np.float32)
    Y = np.arange(64, dtype=np.int32)
    take = lambda s: [(x.numpy(), y.numpy()) for x, y in mydatagen.batches(X, Y, 8, seed=s).take(10)]
    a, b, c = take(3), take(3), take(4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_image_and_mask_get_the_same_transform():
    rng = np.random.default_rng(5)
    X = rng.random((32, 32, 32, 3)).astype(np.float32)
    M = (X[..., :1] > 0.5).astype(np.float32)
    x, m = mydatagen.augment(X, [1, 3], masks=M, aug=Augment(brightness=(1, 1)))
    x, m = x.numpy(), m.numpy()
    expected = mydatagen.augment(M, [1, 3], aug=Augment(brightness=(1, 1))).numpy()
    np.testing.assert_allclose(m, expected, atol=1e-6)
    assert not np.allclose(m, M)   # it did move
    # the mask went where the image's first channel went
    np.testing.assert_allclose(x[..., :1], mydatagen.augment(X[..., :1], [1, 3], aug=Augment(brightness=(1, 1))).numpy(),
                               atol=1e-6)
    # and through batches(): the pairs stay aligned
    for xb, mb, yb in mydatagen.batches(X, np.arange(32), 8, seed=0, masks=X[..., :1],
                                        aug=Augment(brightness=(1, 1))).take(3):
        np.testing.assert_allclose(xb.numpy()[..., :1], mb.numpy(), atol=1e-6)


def test_epochs_cover_floor_n_over_b_without_repeats():
    N, B = 50, 8
    X = np.zeros((N, 8, 8, 1), np.float32)
    Y = np.arange(N, dtype=np.int32)
    seen = [y.numpy() for _, y in mydatagen.batches(X, Y, B, seed=0).take(3 * (N // B))]
    epochs = [np.concatenate(seen[i * (N // B):(i + 1) * (N // B)]) for i in range(3)]
    for e in epochs:
        assert len(e) == (N // B) * B and len(set(e.tolist())) == len(e)
    assert not np.array_equal(epochs[0], epochs[1])   # reshuffled
    with pytest.raises(Exception, match='larger than'):
        mydatagen.batches(X[:4], Y[:4], 8)


def test_flip_option_sets_the_flip_probability():
    """batches(flip=P) is the published augmentation with flip probability P (None: 0.5)."""
    X = np.random.default_rng(5).random((64, 16, 16, 1)).astype(np.float32)
    first = lambda **kw: next(iter(mydatagen.batches(X, batch_size=64, seed=3, **kw))).numpy()
    np.testing.assert_array_equal(first(), first(aug=Augment()))
    for p in (0.0, 1.0):
        np.testing.assert_array_equal(first(flip=p), first(aug=Augment(flip=p)))
    assert not np.array_equal(first(flip=0.0), first(flip=1.0))
    draws = lambda p: Augment(flip=p).params(4096, 16, 16, [1, 2])['flip'].numpy()
    assert draws(0.0).sum() == 0 and draws(1.0).min() == 1 and 0.45 < draws(0.5).mean() < 0.55


def test_compact_keeps_8_bit_images_in_a_quarter_of_the_memory():
    """mydatasets.compact: float32 images whose pixels are k/255 become uint8, and to_float gives
    them back bit for bit, in numpy and in the graph (where the pipeline and the Evaluator convert
    them) for every k; anything else (a pixel between two levels, in any chunk; outside [0, 1];
    another dtype; no images) is returned as it is."""
    import mydatasets as md
    rng = np.random.default_rng(0)
    X = (rng.integers(0, 256, (5, 4, 4, 1)).astype(np.float32) / 255)
    U = md.compact(X)
    assert U.dtype == np.uint8 and U.nbytes * 4 == X.nbytes
    assert np.array_equal(mydatagen.to_float(U), X) and np.array_equal(md.compact(X, chunk=2), U)
    levels = np.arange(256, dtype=np.uint8)
    graph = tf.function(lambda u: mydatagen.to_float(u))(tf.constant(levels)).numpy()
    assert graph.dtype == np.float32 and np.array_equal(graph, levels.astype(np.float32) / 255)
    late = X.copy()
    late[4, 0, 0, 0] = 0.5   # between two levels, in the last chunk of 2
    for other in (np.where(X > 0.5, np.float32(0.5) + 1e-3, X), X * 2, X.astype(np.float64), X[:0]):
        assert md.compact(other) is other
    assert md.compact(late, chunk=2) is late


def test_a_subset_does_not_keep_the_whole_set(real_data):
    """dataset(name, n_train, n_test): the first images as arrays of their own, not views that
    keep every image in memory (reproduce.py's evaluation asks for one training image)."""
    import mydatasets
    d = mydatasets.dataset('mnist', 1, 10)
    for X in [d.train[0]] + [X for _, (X, _) in d.tests]:
        assert X.base is None or X.base.nbytes <= 2 * X.nbytes
