"""The six test backgrounds, pixel by pixel, against the definitions of docs/method.md written as loops."""
import numpy as np
import pytest
from skimage.draw import circle_perimeter, rectangle
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

import mybackgrounds as mb

SIZES = [28, 32, 64]


def loop_image(s, rule):
    return np.array([[1.0 if rule(y, x) else 0.0 for x in range(s)] for y in range(s)], np.float32)


@pytest.mark.parametrize('s', SIZES)
def test_stripes(s):
    want = loop_image(s, lambda y, x: (y - x + s - 1) % 10 < 2)
    np.testing.assert_array_equal(mb.stripes(s), want)
    # bands 2 px thick along the diagonal, period 10 along a row
    row = mb.stripes(s)[s // 2]
    on = np.flatnonzero(row)
    assert set(np.diff(on)) <= {1, 9}


@pytest.mark.parametrize('s', SIZES)
def test_checkerboard(s):
    want = loop_image(s, lambda y, x: ((y + 2) // 6 + (x + 2) // 6) % 2 == 1)
    np.testing.assert_array_equal(mb.checkerboard(s), want)
    b = mb.checkerboard(s)
    assert b[0, 0] == 0 and b[0, 4] == 1 and b[0, 3] == 0   # grid shifted by 2 px: first square is 4 px


@pytest.mark.parametrize('s', SIZES)
def test_border(s):
    want = loop_image(s, lambda y, x: min(y, x, s - 1 - y, s - 1 - x) < 2)
    np.testing.assert_array_equal(mb.border(s), want)


def perimeters(s, circles):
    img = np.zeros((s, s), np.float32)
    for cy, cx, r in circles:
        for y, x in zip(*circle_perimeter(cy, cx, r)):
            if 0 <= y < s and 0 <= x < s:
                img[y, x] = 1
    return img


@pytest.mark.parametrize('s', SIZES)
def test_circumferences(s):
    want = perimeters(s, [(8, 8, 6), (s - 8, 8, 6), (8, s - 8, 6), (s - 8, s - 8, 6)])
    np.testing.assert_array_equal(mb.circumferences(s), want)
    assert mb.circumferences(s)[8, 2] == 1 and mb.circumferences(s)[8, 8] == 0   # radius 6 around (8, 8)


@pytest.mark.parametrize('s', SIZES)
def test_clock(s):
    c = s // 2
    want = perimeters(s, [(c, c, c - 1), (c, c, c - 2)])
    for (y0, x0), (y1, x1) in [((c - 1, 0), (c + 1, 6)), ((c - 1, s - 6), (c + 1, s - 1)),
                               ((0, c - 1), (6, c + 1)), ((s - 6, c - 1), (s - 1, c + 1))]:
        for y in range(y0, y1 + 1):          # inclusive corners
            for x in range(x0, x1 + 1):
                want[y, x] = 1
    np.testing.assert_array_equal(mb.clock(s), want)
    rr, cc = rectangle((c - 1, 0), (c + 1, 6))
    assert mb.clock(s)[rr, cc].all()


@pytest.mark.parametrize('s', SIZES)
@pytest.mark.parametrize('rate', [0.0, 0.01, 0.25, 1.0])
def test_salt_pepper(s, rate):
    flat = np.zeros(s * s, np.float32)
    flat[np.random.RandomState(0).choice(s * s, int(s * s * rate), replace=False)] = 1
    np.testing.assert_array_equal(mb.salt_pepper(s, rate), flat.reshape(s, s))
    assert mb.salt_pepper(s, rate).sum() == int(s * s * rate)


def test_noise_rates():
    assert len(mb.NOISE_RATES) == 20
    np.testing.assert_allclose(mb.NOISE_RATES[:11], np.arange(11) / 100, atol=1e-12)
    np.testing.assert_allclose(mb.NOISE_RATES[10:], np.arange(1, 11) / 10, atol=1e-12)


def test_order_and_dtype():
    assert list(mb.BACKGROUNDS) == ['stripes', 'checkerboard', 'border', 'circumferences', 'clock', 'salt_pepper']
    for f in mb.BACKGROUNDS.values():
        b = f(40)
        assert b.shape == (40, 40) and b.dtype == np.float32 and set(np.unique(b)) <= {0.0, 1.0}


@pytest.mark.parametrize('bad', [15, 8, 0, -3, 20.5])
def test_too_small_refused(bad):
    for f in mb.BACKGROUNDS.values():
        with pytest.raises(ValueError, match='>= 16'):
            f(bad)


def test_foreground_is_disk2_dilation():
    rng = np.random.default_rng(1)
    X = (rng.random((20, 32, 32, 1)) > 0.97) * rng.random((20, 32, 32, 1))
    want = np.stack([binary_dilation(x[..., 0] > 0, disk(2).astype(bool)) for x in X])
    np.testing.assert_array_equal(mb.foreground(X), want)


def test_apply_background():
    rng = np.random.default_rng(2)
    X = ((rng.random((10, 32, 32, 1)) > 0.95) * rng.random((10, 32, 32, 1))).astype(np.float32)
    X0 = X.copy()
    b = mb.checkerboard(32)
    Z = mb.apply_background(X, b)
    keep = np.stack([binary_dilation(x[..., 0] > 0, disk(2).astype(bool)) for x in X])[..., None]
    np.testing.assert_array_equal(Z[keep], X[keep])
    np.testing.assert_array_equal(Z[~keep], np.broadcast_to(b[None, :, :, None], Z.shape)[~keep])
    np.testing.assert_array_equal(X, X0)   # the input is left alone
    with pytest.raises(ValueError):
        mb.apply_background(np.zeros((2, 32, 32, 3)), b)


def test_png(tmp_path):
    import subprocess
    import sys
    import imageio.v3 as iio
    out = tmp_path / 'bg.png'
    r = subprocess.run([sys.executable, 'mybackgrounds.py', '--size', '28', '--output', str(out)],
                       cwd=mb.__file__.rsplit('/', 1)[0], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    img = iio.imread(out)
    assert img.shape == (28 * 4, (6 * 28 + 5 * 2) * 4)
    # first pattern, drawn dark on white, scaled 4x: equals the stripes
    np.testing.assert_array_equal(img[::4, :28 * 4:4] < 128, mb.stripes(28) == 1)


@pytest.mark.parametrize('s', SIZES)
def test_validation_patterns_are_their_own(s):
    """The validation backgrounds: fixed binary patterns with ink shares in the test's range,
    none of them a test pattern (every choice of a recipe is made on them instead)."""
    assert list(mb.VALIDATION) == ['grid', 'dots', 'waves', 'scribble', 'blobs', 'speckle', 'rising', 'falling']
    np.testing.assert_array_equal(mb.falling(s), mb.rising(s)[:, ::-1])     # one pattern, both orientations
    r = mb.rising(s)   # 2 px wide along a row, one band every 6 px, 1 px to the left every 2 rows down
    assert r[0, :8].tolist() == r[1, :8].tolist() == [1, 1, 0, 0, 0, 0, 1, 1] and r[2, :8].tolist() == [1, 0, 0, 0, 0, 1, 1, 0]
    for name, f in mb.VALIDATION.items():
        b = f(s)
        assert b.shape == (s, s) and b.dtype == np.float32 and set(np.unique(b)) == {0.0, 1.0}, name
        assert 0.08 < b.mean() < 0.45, (name, b.mean())
        np.testing.assert_array_equal(b, f(s))   # the same pattern every time
        for t in mb.BACKGROUNDS.values():
            assert np.mean(b == t(s)) < 0.9, name


def test_foreground_without_halo_is_the_ink():
    X = np.zeros((1, 32, 32, 1), np.float32)
    X[0, 10, 10] = 0.5
    assert mb.foreground(X, 0).sum() == 1 and mb.foreground(X).sum() == 13   # disk of radius 2
    b = mb.grid(32)
    Z = mb.apply_background(X, b, halo=0)
    assert Z[0, 10, 10, 0] == 0.5 and np.array_equal(np.delete(Z.ravel(), 10 * 32 + 10), np.delete(b.ravel(), 10 * 32 + 10))
