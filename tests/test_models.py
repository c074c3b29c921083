"""The four architectures: parameter counts, shapes, save/load, clear errors."""
import math

import keras
import numpy as np
import pytest

import mymodels


def conv(cin, cout, k=3):
    return cin * k * k * cout + cout


def classifier_params(H, C, K):
    n, total, c, side = int(math.log2(H / 4)), 0, C, H
    for i in range(n):
        total += conv(c, 2 ** (i + 5))
        c, side = 2 ** (i + 5), side // 2
    return total + (side * side * c) * 128 + 128 + 128 * K + K


def unet_params(H, C):
    n = int(math.log2(H / 4))
    total, c, skips = 0, C, []
    for i in range(n):
        total += conv(c, 2 ** (i + 5))
        c = 2 ** (i + 5)
        skips.append(c)
    total += conv(c, 2 ** (n + 4))
    c = 2 ** (n + 4)
    for i in range(n):
        total += conv(c, 2 ** (n - 1 - i + 5))
        c = 2 ** (n - 1 - i + 5) + skips[n - 1 - i]
    return total + conv(c, 1, 1)


def gen_params(tile, C):
    d = tile
    while d % 2 == 0:
        d //= 2
    d = max(d, 4)
    n = int(math.log2(tile // d))
    total = conv(C, 2 ** (n + 5))
    c = 2 ** (n + 5)
    for i in range(n):
        total += conv(c, 2 ** (n - 1 - i + 5))
        c = 2 ** (n - 1 - i + 5)
    return total + conv(c, C, 1), d


def test_spec_counts():
    assert mymodels.classifier((32, 32, 1), 10).count_params() == 356234
    assert mymodels.classifier((28, 28, 1), 10).count_params() == 421642
    u = mymodels.unet((32, 32, 1))
    assert u.count_params() == 572321 and u.output_shape == (None, 32, 32, 1)
    g = mymodels.gen((32, 32, 1), 2)
    assert g.count_params() == 93569 and g.input_shape == (None, 16) and g.output_shape == (None, 16, 16, 1)


@pytest.mark.parametrize('H', [28, 32, 64, 96])
@pytest.mark.parametrize('C', [1, 3])
def test_classifier_and_unet_rules(H, C):
    m = mymodels.classifier((H, H, C), 7)
    assert m.count_params() == classifier_params(H, C, 7) and m.output_shape == (None, 7)
    u = mymodels.unet((H, H, C))
    assert u.count_params() == unet_params(H, C) and u.output_shape == (None, H, H, 1)


@pytest.mark.parametrize('H,tiles', [(28, 1), (32, 1), (32, 2), (32, 4), (64, 1), (64, 2), (64, 4),
                                     (224, 1), (224, 2), (224, 4)])
@pytest.mark.parametrize('C', [1, 3])
def test_gen_rules(H, tiles, C):
    g = mymodels.gen((H, H, C), tiles)
    want, d = gen_params(H // tiles, C)
    assert g.count_params() == want
    assert g.input_shape == (None, d * d * C) and g.output_shape == (None, H // tiles, H // tiles, C)
    x = g.predict(np.random.randn(3, d * d * C).astype('float32'), verbose=0)
    assert x.min() >= 0 and x.max() <= 1   # sigmoid


@pytest.mark.parametrize('shape,tiles', [((28, 28, 1), 2), ((28, 28, 1), 4), ((32, 32, 1), 3), ((32, 32, 1), 0),
                                         ((32, 32, 1), 16), ((32, 48, 1), 1)])
def test_gen_refuses_clearly(shape, tiles):
    with pytest.raises(mymodels.ModelError, match='cannot build'):
        mymodels.gen(shape, tiles)


def vgg_head(flat, K):
    return flat * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * K + K


def test_vgg19_counts_and_preprocessing():
    m = mymodels.vgg19((128, 128, 3), 4, weights=None)
    assert m.count_params() == 20024384 + vgg_head(4 * 4 * 512, 4)
    assert m.output_shape == (None, 4)
    assert math.isclose(float(m.optimizer.learning_rate), 1e-5, rel_tol=1e-6)
    x = np.random.rand(2, 8, 8, 3).astype('float32')
    y = mymodels.VGGPreprocess()(x).numpy()
    np.testing.assert_allclose(y[..., 0], x[..., 2] * 255 - 103.939, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(y[..., 2], x[..., 0] * 255 - 123.68, rtol=1e-5, atol=1e-3)
    assert mymodels.build_classifier((128, 128, 3), 4, weights=None).name == 'vgg19_classifier'
    assert mymodels.build_classifier((64, 64, 3), 4).name == 'classifier'


def test_vgg19_offline_says_what_to_do(monkeypatch, tmp_path):
    import keras.src.applications.vgg19 as v
    monkeypatch.setattr(v, 'WEIGHTS_PATH_NO_TOP', 'http://127.0.0.1:9/vgg19_notop.h5')
    monkeypatch.setenv('KERAS_HOME', str(tmp_path))
    with pytest.raises(mymodels.ModelError, match='--weights none') as e:
        mymodels.vgg19((64, 64, 3), 4)
    assert '\n' not in str(e.value)


BUILDERS = {
    'classifier': lambda: mymodels.classifier((32, 32, 1), 10),
    'vgg19': lambda: mymodels.vgg19((32, 32, 3), 3, weights=None),
    'unet': lambda: mymodels.unet((32, 32, 1)),
    'gen': lambda: mymodels.gen((32, 32, 3), 2),
}


@pytest.mark.parametrize('name', sorted(BUILDERS))
@pytest.mark.parametrize('ext', ['.keras', '.h5'])
def test_save_load_round_trip(name, ext, tmp_path):
    m = BUILDERS[name]()
    x = np.random.rand(4, *m.input_shape[1:]).astype('float32')
    path = str(tmp_path / f'm{ext}')
    mymodels.save(m, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f'm{ext}']   # no temporary left
    m2 = keras.models.load_model(path)   # plain: no custom objects, no safe_mode=False
    np.testing.assert_array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))
    assert mymodels.kind_of(m2) == ('classifier' if name in ('classifier', 'vgg19') else name)


def test_load_checks(tmp_path):
    c, u = mymodels.classifier((32, 32, 1), 10), mymodels.unet((32, 32, 1))
    mymodels.save(c, str(tmp_path / 'c.keras'))
    mymodels.save(u, str(tmp_path / 'u.keras'))
    assert mymodels.load(str(tmp_path / 'c.keras'), 'classifier', (32, 32, 1), 10).count_params() == 356234
    with pytest.raises(mymodels.ModelError, match='mask generator.*classifier'):
        mymodels.load(str(tmp_path / 'u.keras'), 'classifier')
    with pytest.raises(mymodels.ModelError, match='is a classifier.*mask generator'):
        mymodels.load(str(tmp_path / 'c.keras'), 'unet')
    with pytest.raises(mymodels.ModelError, match=r'shape \(32, 32, 1\).*\(64, 64, 3\)'):
        mymodels.load(str(tmp_path / 'c.keras'), 'classifier', (64, 64, 3))
    with pytest.raises(mymodels.ModelError, match='10 outputs.*9 classes'):
        mymodels.load(str(tmp_path / 'c.keras'), 'classifier', (32, 32, 1), 9)
    with pytest.raises(mymodels.ModelError, match='does not exist'):
        mymodels.load(str(tmp_path / 'nope.keras'))
    (tmp_path / 'bad.keras').write_bytes(b'not a model')
    with pytest.raises(mymodels.ModelError, match='cannot load model'):
        mymodels.load(str(tmp_path / 'bad.keras'))
