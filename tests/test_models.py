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


# --- the literature baseline: AG-CNN ------------------------------------------------------------

def test_largest_region_box_agrees_with_scikit_image():
    from skimage.measure import label, regionprops
    M = np.random.default_rng(0).random((300, 5, 6)) > 0.55
    got = mymodels.largest_region_box(M).numpy()
    for m, box in zip(M, got):
        regions = regionprops(label(m, connectivity=2))   # 8-connected, in raster order
        want = max(regions, key=lambda r: r.area).bbox if regions else (0, 0, 5, 6)   # first of the largest
        assert tuple(box) == tuple(want), (m.astype(int), box, want)


def peaked_features(cells, n_channels=8, value=5.0):
    """(1, 4, 4, C) features of a 32x32 image, high in `cells`, low and uneven elsewhere."""
    f = np.random.default_rng(1).random((1, 4, 4, n_channels)).astype('float32') * 0.5
    for r, c in cells:
        f[0, r, c, 3] = value
    return f


def test_attention_crop_is_the_box_of_the_peaked_region():
    image = np.random.default_rng(2).random((1, 32, 32, 1)).astype('float32')
    f = peaked_features([(1, 2), (2, 2), (2, 3)] + [(0, 0)])   # a region of 3 cells, and a lone one
    layer = mymodels.AttentionCrop(tau=0.7, size=16)
    np.testing.assert_array_equal(layer.boxes(f, 32, 32).numpy(), [[8, 16, 24, 32]])
    # the crop resized to its own size is the image's pixels in the box
    np.testing.assert_allclose(layer([image, f]).numpy(), image[:, 8:24, 16:32], atol=1e-6)
    # a constant heatmap: the whole image (the published code dropped such images)
    whole = mymodels.AttentionCrop(tau=0.7, size=32)([image, np.ones((1, 4, 4, 8), 'float32')]).numpy()
    np.testing.assert_allclose(whole, image, atol=1e-6)
    # tau: a lower threshold takes in a weaker neighbour cell too (about 0.6 after normalisation)
    f[0, 3, 2, 3] = 3.2
    assert mymodels.AttentionCrop(tau=0.7).boxes(f, 32, 32).numpy().tolist() == [[8, 16, 24, 32]]
    assert mymodels.AttentionCrop(tau=0.5).boxes(f, 32, 32).numpy().tolist() == [[8, 16, 32, 32]]


def test_attention_parameters_are_the_published_layers():
    m = mymodels.attention(mymodels.classifier((32, 32, 1), 10), 10)
    local = conv(1, 128) + conv(128, 256) + conv(256, 512)          # stride-2 Conv 3x3 128, 256, 512
    fusion = (512 + 128) * 2048 + 2048 + 2048 * 256 + 256 + 256 * 10 + 10   # Dense 2048, 256, K
    trunk = conv(1, 32) + conv(32, 64) + conv(64, 128)               # the global branch up to its last pooling
    trainable = sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert trainable == local + fusion == 3316490
    assert m.count_params() == local + fusion + trunk
    assert m.output_shape == (None, 10) and mymodels.kind_of(m) == 'classifier'


def test_attention_on_vgg19_and_saved(tmp_path):
    g = mymodels.vgg19((128, 128, 3), 4, weights=None)
    m = mymodels.attention(g, 4)   # the published script failed here (VGG19 has no top-level pooling)
    assert mymodels.attention_features(g).output_shape == (None, 4, 4, 512)
    x = np.random.default_rng(3).random((2, 128, 128, 3)).astype('float32')
    assert m.predict(x, verbose=0).shape == (2, 4)
    small = mymodels.attention(mymodels.classifier((32, 32, 1), 10), 10, tau=0.6, crop=24)
    x = np.random.default_rng(4).random((3, 32, 32, 1)).astype('float32')
    for ext in ('.keras', '.h5'):
        mymodels.save(small, str(tmp_path / f'a{ext}'))
        back = mymodels.load(str(tmp_path / f'a{ext}'), 'classifier', (32, 32, 1), 10)
        np.testing.assert_allclose(back.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
        assert back.get_layer('attention_crop').tau == 0.6 and back.get_layer('attention_crop').size == 24


# --- precision: a property of the run ------------------------------------------------------------

def policies(model):
    """Each computing layer's dtype policy, by layer name, nested models' layers too."""
    return {l.name: l.dtype_policy.name for l, _ in mymodels._computing_layers(model)}


@pytest.mark.parametrize('name', sorted(BUILDERS) + ['attention'])
def test_in_precision(name, tmp_path):
    """bfloat16: the same weights, every layer inside computing in bfloat16, the output layers and
    the attention crop in float32, outputs float32 and close to float32's; back to float32 gives
    the original exactly; the saved file is float32."""
    keras.utils.set_random_seed(0)
    m = mymodels.attention(mymodels.classifier((32, 32, 1), 10), 10) if name == 'attention' else BUILDERS[name]()
    x = np.random.default_rng(1).random((6, *m.input_shape[1:])).astype('float32')
    b = mymodels.in_precision(m, 'bfloat16')
    got = policies(b)
    outputs = {t._keras_history.operation.name for t in b.outputs}
    assert all(p == ('float32' if n in outputs or n == 'attention_crop' else 'mixed_bfloat16') for n, p in got.items())
    assert len(got) > 3 and b.outputs[0].dtype == 'float32'
    assert all(w.dtype == 'float32' for w in b.weights)
    assert [w.path for w in b.trainable_weights] == [w.path for w in m.trainable_weights]   # the frozen stay frozen
    assert all(np.array_equal(u, v) for u, v in zip(m.get_weights(), b.get_weights()))
    out = lambda model: keras.ops.convert_to_numpy(model(x, training=False))   # eager: no predict() tracing
    y, yb = out(m), out(b)
    assert not np.array_equal(y, yb)   # it does compute in bfloat16 (8 bits of mantissa) ...
    assert np.abs(y - yb).max() < 0.05 * max(1.0, np.abs(y).max())   # ... to about 2 digits
    np.testing.assert_array_equal(out(mymodels.in_precision(b, 'float32')), y)
    assert mymodels.in_precision(m, 'float32') is m
    if name == 'vgg19':   # 80 MB to write and read again: its files are test_save_load_round_trip's
        return
    mymodels.save(b, str(tmp_path / 'b.keras'))
    back = mymodels.load(str(tmp_path / 'b.keras'))
    assert set(policies(back).values()) == {'float32'}
    np.testing.assert_array_equal(out(back), y)


def test_in_precision_of_a_model_half_converted():
    """train_att.py's case: an attention model built on a global classifier already in bfloat16
    (its own new layers in float32) is converted whole, not taken as bfloat16 already."""
    g = mymodels.in_precision(mymodels.classifier((32, 32, 1), 10), 'bfloat16')
    a = mymodels.in_precision(mymodels.attention(g, 10, crop=16), 'bfloat16')
    got = policies(a)
    assert got.pop('logits') == 'float32' and got.pop('attention_crop') == 'float32'
    assert set(got.values()) == {'mixed_bfloat16'} and len(got) > 8
    assert mymodels.in_precision(a, 'bfloat16') is a   # converted once, then left as it is
