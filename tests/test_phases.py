"""The three phases, evaluate and evaluate_seg: the training steps in-process (unit tier), and
end to end on the shared smoke chain and small real MNIST subsets (slow): every background and
binarize mode, pictures, and each bad input (Ctrl-C and kills: test_faults.py)."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import mycli
import mydatagen
import mydatasets
import mymodels
import myreport
import mysettings
import mytrainers
from helpers import csv_numbers, inprocess, one_line_error, script

SMALL = ['--subset', 64, '--test-subset', 64, '--batchsize', 32, '--seed', 1]


def finished_phases(stdout):
    """The phases reproduce.py said were done, in the order they ended."""
    return [l.split(': ', 1)[0] for l in stdout.splitlines() if l.endswith(': done')]


@pytest.mark.slow
def test_phase_models_and_logs(smoke_chain):
    d = smoke_chain['dir']
    order = finished_phases(smoke_chain['stdout'])
    assert sorted(order) == sorted(['phase 1', 'phase 3 (heuristic mask)', 'phase 2', 'phase 3 (U-Net mask)',
                                    'attention-guided CNN'])   # one line a phase, as it ends (two run side by side)
    assert order[0] == 'phase 1' and order.index('phase 2') < order.index('phase 3 (U-Net mask)')
    # the phases evaluated nothing (--report none): the table evaluated their models
    assert not any(l.split(': ', 1)[-1].startswith('train') for l in smoke_chain['stdout'].splitlines())
    clean = json.loads((d / 'evaluation.json').read_text())['Traditional']['columns']['clean']
    assert clean > 15   # one epoch on 512 digits: above chance on clean digits
    for name, kind in [('phase1', 'classifier'), ('phase2', 'unet'), ('phase3-heuristic', 'classifier'),
                       ('phase3-unet', 'classifier'), ('phase3-unet-back', 'gen'), ('attention', 'classifier')]:
        assert mymodels.kind_of(mymodels.load(str(d / f'{name}.keras'))) == kind
        if not name.endswith('back'):
            rows = (d / f'{name}-log.csv').read_text().splitlines()
            assert rows[0].startswith('epoch,') and [r.split(',')[0] for r in rows[1:]] == ['1']
            assert not (d / f'{name}-checkpoint').exists()   # removed once the final model is saved


@pytest.mark.slow
def test_evaluate_gives_what_the_table_evaluated(smoke_chain):
    d = smoke_chain['dir']
    table, f32 = json.loads((d / 'evaluation.json').read_text()), {}
    # (the attention model: test_attention_baseline_end_to_end)
    for name, row in [('phase3-heuristic', 'Proposal (heuristic mask)'), ('phase3-unet', 'Proposal (U-Net mask)')]:
        r = inprocess('evaluate.py', 'mnist_backgrounds', d / f'{name}.keras', '--subset', 512, '--test-subset', 200)
        assert r.returncode == 0, r.stderr
        # evaluate.py prints the accuracies alone (the training set's, then the 7 test sets'): on the
        # clean set and the six backgrounds, the numbers reproduce.py's table has
        cols, f32[name] = table[row]['columns'], [float(v) for v in r.stdout.strip().split(',')]
        got = [100 * v for v in f32[name]][1:8]
        assert got == pytest.approx([cols[c] for c in myreport.COLUMNS[:7]], abs=1e-9)
    # in bfloat16: the same model, computing in bfloat16: a few images of 200 may change their class
    r = inprocess('evaluate.py', 'mnist_backgrounds', d / 'phase3-unet.keras', '--subset', 512, '--test-subset', 200,
                  '--precision', 'bfloat16')
    assert r.returncode == 0, r.stderr
    diff = np.abs(np.array([float(v) for v in r.stdout.strip().split(',')]) - f32['phase3-unet'])
    assert diff.max() <= 0.03, diff
    r = inprocess('evaluate.py', 'mnist_backgrounds', d / 'phase1.keras', '--test-subset', 100, '--subset', 10,
               '--no-halo', '--names')
    assert r.returncode == 0, r.stderr
    header, values = r.stdout.strip().splitlines()
    assert header.split(',') == ['train', 'clean', 'stripes', 'checkerboard', 'border', 'circumferences', 'clock',
                                 'salt_pepper'] + [f'{b}_nohalo' for b in ['stripes', 'checkerboard', 'border',
                                                                           'circumferences', 'clock', 'salt_pepper']]
    assert len(values.split(',')) == 14


@pytest.mark.slow
def test_attention_baseline_end_to_end(smoke_chain, tmp_path):
    """train_att.py: the global branch trained first (as phase 1: the same weights as train1.py's),
    or taken from a phase-1 file; the saved model is a classifier that evaluate.py takes."""
    small = ['--epochs', 1, '--subset', 512, '--test-subset', 200, '--batchsize', 32, '--seed', 0]
    r = script('train_att.py', 'mnist_backgrounds', *small, '--output', tmp_path / 'att.keras')
    assert r.returncode == 0, r.stderr[-2000:]
    first, second = [l for l in r.stdout.splitlines() if l.startswith('train_att.py')]
    phase1 = mymodels.load(str(smoke_chain['dir'] / 'phase1.keras')).get_weights()   # the smoke chain's phase 1
    assert all(np.array_equal(a, b) for a, b in zip(mymodels.load(str(tmp_path / 'att-global.keras')).get_weights(),
                                                     phase1))   # exactly phase 1
    assert (tmp_path / 'att-global.keras').exists() and (tmp_path / 'att.keras').exists()
    ev = inprocess('evaluate.py', 'mnist_backgrounds', tmp_path / 'att.keras', '--subset', 512, '--test-subset', 200)
    assert [float(v) for v in ev.stdout.split(',')] == csv_numbers(second)
    r = script('train_att.py', 'mnist_backgrounds', '--global-model', smoke_chain['dir'] / 'phase1.keras', '--tau', 0.5,
               '--crop', 8, *small[:-2], '--output', tmp_path / 'att2.h5')
    assert r.returncode == 0, r.stderr[-2000:]
    m = mymodels.load(str(tmp_path / 'att2.h5'), 'classifier', (32, 32, 1), 10)
    assert m.get_layer('attention_crop').tau == 0.5 and m.get_layer('attention_crop').size == 8
    assert not (tmp_path / 'att2-global.h5').exists()


@pytest.mark.slow
def test_pictures(smoke_chain, tmp_path):
    d = smoke_chain['dir']
    r = script('train2.py', 'mnist_backgrounds', d / 'phase1.keras', 'otsu', '--epochs', 1, '--output',
               tmp_path / 'p2.keras', '--debug', tmp_path / 'debug', *SMALL)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / 'debug')) == ['masks-epoch-001.png']
    r = script('train3.py', 'mnist_backgrounds', d / 'phase1.keras', d / 'phase2.keras', 'otsu', 'adv', '--epochs', 1,
               '--output', tmp_path / 'p3.keras', '--imsave', tmp_path / 'pics', *SMALL)
    assert r.returncode == 0, r.stderr
    pics = sorted(os.listdir(tmp_path / 'pics'))
    assert len(pics) == 7 and pics[0] == 'epoch-001-border.png'
    g = keras.models.load_model(tmp_path / 'p3-back.keras')
    assert mymodels.kind_of(g) == 'gen' and g.output_shape == (None, 16, 16, 1)


@pytest.mark.slow
def test_phase2_learning_rate(smoke_chain, tmp_path):
    """train2.py --lr / --lr-schedule reach the U-Net's optimiser: the same seed and data at another
    rate give other weights, and the default is the published constant 1e-5."""
    p1 = smoke_chain['dir'] / 'phase1.keras'
    weights = {}
    for name, extra in (('default', []), ('published', ['--lr', 1e-5]), ('fast', ['--lr', 1e-3, '--lr-schedule', 'cosine'])):
        r = script('train2.py', 'mnist_backgrounds', p1, 'otsu', '--epochs', 1, '--output', tmp_path / f'{name}.keras',
                   *extra, *SMALL)
        assert r.returncode == 0, r.stderr[-2000:]
        weights[name] = keras.models.load_model(tmp_path / f'{name}.keras').get_weights()
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(weights[a], weights[b]))
    assert same('default', 'published') and not same('default', 'fast')


@pytest.mark.slow
def test_phase3_with_two_unets(smoke_chain, tmp_path):
    """train3.py takes several U-Nets joined by commas, end to end, and says in one line which one
    is missing."""
    d = smoke_chain['dir']
    p1, p2 = d / 'phase1.keras', d / 'phase2.keras'
    out = tmp_path / 'mix.keras'
    r = script('train3.py', 'mnist_backgrounds', p1, f'{p2},{p2}', 'otsu', 'adv', '--epochs', 1, '--output', out, *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.exists() and (tmp_path / 'mix-back.keras').exists()
    r = script('train3.py', 'mnist_backgrounds', p1, f'{p2},{tmp_path / "none.keras"}', 'otsu', 'adv', '--output',
               tmp_path / 'x.keras', *SMALL)
    assert 'none.keras' in one_line_error(r) and not (tmp_path / 'x.keras').exists()


@pytest.mark.slow
def test_phase3_masks_once_end_to_end(smoke_chain, tmp_path):
    """train3.py --masks-once, end to end on the smoke chain's U-Net: it trains, and records the
    option (a resumed run without it would not match)."""
    d = smoke_chain['dir']
    out = tmp_path / 'once.keras'
    r = script('train3.py', 'mnist_backgrounds', d / 'phase1.keras', d / 'phase2.keras', 'otsu', 'adv', '--masks-once',
               '--epochs', 1, '--report', 'end', '--output', out, *SMALL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.exists() and (tmp_path / 'once-back.keras').exists()
    assert 'masks-once' in r.stdout.strip().splitlines()[-1]   # the final line names the run's settings


@pytest.mark.slow
def test_evaluate_seg(smoke_chain, tmp_path):
    import imageio.v3 as iio
    r = inprocess('evaluate_seg.py', 'mnist_backgrounds', smoke_chain['dir'] / 'phase2.keras', '--subset', 20,
               '--output', tmp_path / 'seg')
    assert r.returncode == 0, r.stderr
    files = sorted(os.listdir(tmp_path / 'seg'))
    assert len(files) == 20 and 'seg-0.png' in files and 'seg-19.png' in files
    m = iio.imread(tmp_path / 'seg' / 'seg-0.png')
    assert m.shape == (32, 32) and set(np.unique(m)) <= {0, 255}
    # in bfloat16: the same masks but for the odd pixel whose soft mask sits at the 0.5 threshold
    r = inprocess('evaluate_seg.py', 'mnist_backgrounds', smoke_chain['dir'] / 'phase2.keras', '--subset', 20,
                  '--output', tmp_path / 'seg16', '--precision', 'bfloat16')
    assert r.returncode == 0, r.stderr
    read = lambda d: np.stack([iio.imread(tmp_path / d / f'seg-{i}.png') for i in range(20)]) > 0
    assert (read('seg') != read('seg16')).mean() < 0.01


@pytest.mark.slow
def test_otsu_agrees_with_skimage_on_real_masks(smoke_chain, real_data):
    from skimage.filters import threshold_otsu
    unet = keras.models.load_model(smoke_chain['dir'] / 'phase2.keras')
    (X, _), _ = mydatasets.load('mnist')
    M = unet.predict(X[:200], verbose=0)
    t = mytrainers.otsu_threshold(M).numpy()
    want = np.array([threshold_otsu(m) for m in M])
    width = (M.reshape(200, -1).max(1) - M.reshape(200, -1).min(1)) / 256
    assert (np.abs(t - want) <= width + 1e-7).all()      # never more than one bin apart
    assert np.mean(np.isclose(t, want, rtol=0, atol=1e-6)) >= 0.95
    hard = mytrainers.binarize(M, 'otsu').numpy()
    ref = np.stack([m >= threshold_otsu(m) for m in M])
    assert np.mean(hard == ref) > 0.999


def test_other_binarize_modes():
    rng = np.random.default_rng(0)
    M = rng.random((10, 16, 16, 1)).astype(np.float32)
    q = mytrainers.quantile(M, 0.8).numpy()
    np.testing.assert_allclose(q, [np.quantile(m, 0.8) for m in M], rtol=1e-5)
    hard = mytrainers.binarize(M, 'quantile', area=0.2).numpy()
    np.testing.assert_allclose(hard.mean((1, 2, 3)), 0.2, atol=1 / 256 + 1e-6)
    np.testing.assert_array_equal(mytrainers.binarize(M, '0.5').numpy(), (M >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(mytrainers.binarize(M, 'none').numpy(), M)
    const = np.full((2, 8, 8, 1), 0.3, np.float32)
    np.testing.assert_array_equal(mytrainers.binarize(const, 'otsu').numpy(), np.ones_like(const))


def test_jitter_cuts_each_mask_between_otsu_and_one_half():
    """'jitter': at u = 0 Otsu's mask, at u -> 1 the mask cut at 0.5 (Otsu's where it is above
    0.5), in between a mask inside the first and around the second; without u, the midpoint."""
    rng = np.random.default_rng(1)
    M = (0.6 * rng.random((4, 16, 16, 1))).astype(np.float32)   # soft masks of low contrast, as the U-Net's
    M[3] = 0.7 + 0.3 * M[3]                                     # one whose Otsu threshold is above 0.5
    otsu, half = (mytrainers.binarize(M, m).numpy() for m in ('otsu', '0.5'))
    at = lambda u: mytrainers.binarize(M, 'jitter', u=np.full(4, u, np.float32)).numpy()
    np.testing.assert_array_equal(at(0.0), otsu)
    np.testing.assert_array_equal(at(0.999999)[:3], half[:3])
    np.testing.assert_array_equal(at(0.7)[3], otsu[3])
    mid = at(0.5)
    assert np.all(mid <= otsu) and np.all(mid[:3] >= half[:3]) and otsu[:3].sum() > mid[:3].sum() > half[:3].sum()
    np.testing.assert_array_equal(mytrainers.binarize(M, 'jitter').numpy(), mid)


@pytest.fixture(scope='module')
def mnist_small(real_data):
    X, Y = mydatasets.dataset('mnist', 128).train
    return mydatasets.LEVELS[X], Y   # float32 images, as a batch reaches a model


def phase3(back='adv', mode='otsu', unets=(), **kw):
    """Phase-3 settings as train3.py would make them: the published ones, but for `kw`."""
    return mysettings.Phase3(dataset='mnist', model='clf.keras', unet_model='u.keras' if unets else 'heuristic',
                             binarize_mask=mode, back=back, **kw)


def trainer(clf, back='adv', mode='otsu', gen=None, unets=(), total_steps=1, **kw):
    """A BackgroundTrainer of settings phase3(back, mode, unets, **kw)."""
    return mytrainers.BackgroundTrainer(clf, phase3(back, mode, unets, **kw), gen, unets, total_steps)


@pytest.mark.parametrize('back, mode, replay', [(b, 'otsu', 0) for b in ['black', 'noise', 'adv', 'real']] +
                         [('adv', m, 0) for m in ['0.5', 'quantile', 'none', 'jitter']] + [('adv', 'otsu', 0.5)])
def test_phase3_modes_train(mnist_small, back, mode, replay):
    X, Y = mnist_small
    clf = mymodels.classifier((32, 32, 1), 10)
    unet = mymodels.unet((32, 32, 1))
    gen = mymodels.gen((32, 32, 1), 2) if back == 'adv' else None
    t = trainer(clf, back, mode, gen, [unet], seed=0, replay=replay, history=8)
    t.compile(optimizer=keras.optimizers.Adam(1e-3), gen_optimizer=mymodels.adam(1e-5) if gen else None)
    t.build_all(X[:1])
    before = {m.name: [w.numpy().copy() for w in m.weights] for m in [clf, unet] + ([gen] if gen else [])}
    ds = mydatagen.batches(X, Y, 16, seed=0)
    if back == 'real':
        def crops(rng=np.random.default_rng(0)):
            while True:
                yield rng.random((32, 32, 1)).astype(np.float32)
    h = t.fit(t.batches(ds, 16, crops=crops() if back == 'real' else None), steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(h.history['ce'][0])
    changed = lambda m: any(not np.array_equal(a, w.numpy()) for a, w in zip(before[m.name], m.weights))
    assert changed(clf) and not changed(unet)          # the U-Net stays frozen in phase 3
    if gen:
        assert changed(gen) and h.history['adv_loss'][0] < 0
    else:
        assert h.history['adv_loss'][0] == 0


def test_composite_and_tiles(mnist_small):
    X, _ = mnist_small
    gen = mymodels.gen((32, 32, 1), 2)
    t = trainer(mymodels.classifier((32, 32, 1), 10), 'adv', '0.5', gen, seed=3)
    B = t.painter.picture(X[:5]).numpy()
    assert B.shape == (5, 32, 32, 1)
    quads = [B[:, :16, :16], B[:, :16, 16:], B[:, 16:, :16], B[:, 16:, 16:]]
    assert all(not np.allclose(quads[0], q) for q in quads[1:])   # independent draws per tile
    M, _ = t.masks(X[:5])
    np.testing.assert_array_equal(M.numpy(), (X[:5] > 0).astype(np.float32))   # heuristic: X > 0
    Z = t.composite(X[:5], M, B).numpy()
    np.testing.assert_allclose(Z[M.numpy() == 1], X[:5][M.numpy() == 1])
    np.testing.assert_allclose(Z[M.numpy() == 0], B[M.numpy() == 0])


def constant_mask(value):
    """A stand-in U-Net whose soft mask is `value` everywhere."""
    x = inp = keras.Input((32, 32, 1))
    out = keras.layers.Conv2D(1, 1, activation='sigmoid', kernel_initializer='zeros',
                              bias_initializer=keras.initializers.Constant(np.log(value / (1 - value))))(x)
    return keras.Model(inp, out)


def test_two_unets_take_turns(mnist_small):
    """With two U-Nets, image i of the painted ones takes its mask from U-Net i mod 2, also in a
    batch of one (the second U-Net's share empty), in eager mode and in a compiled step; both stay
    frozen while the classifier trains."""
    X, Y = mnist_small
    gen = mymodels.gen((32, 32, 1), 2)
    t = trainer(mymodels.classifier((32, 32, 1), 10), 'adv', '0.5', gen, [constant_mask(0.9), constant_mask(0.1)],
                seed=0, clean_share=0.25)
    want = lambda n: np.array([1.0 if i % 2 == 0 else 0.0 for i in range(n)])
    for n in (5, 2, 1):
        M, soft = t.masks(X[:n])
        np.testing.assert_array_equal(M.numpy().reshape(n, -1).mean(1), want(n))
        np.testing.assert_allclose(soft.numpy().reshape(n, -1).mean(1), 0.1 + 0.8 * want(n), rtol=1e-5)
    compiled = tf.function(lambda x: t.masks(x)[0])
    np.testing.assert_array_equal(compiled(X[:3]).numpy().reshape(3, -1).mean(1), want(3))
    t.compile(optimizer=keras.optimizers.Adam(1e-3), gen_optimizer=mymodels.adam(1e-4))
    t.build_all(X[:1])
    unets = [t.unet] + t.more_unets
    before = [[w.numpy().copy() for w in u.weights] for u in unets]
    h = t.fit(t.batches(mydatagen.batches(X, Y, 16, seed=0), 16), steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(h.history['ce'][0])
    assert all(np.array_equal(a, w.numpy()) for u, b in zip(unets, before) for a, w in zip(b, u.weights))


def test_masks_once(mnist_small):
    """--masks-once: the U-Net's masks of the training images, computed once in batches (a short
    last one), are bit for bit those a step computes from the same images; the batches then carry
    them, augmented with their images, and a step takes the masks its batch carries, with the
    U-Net left frozen."""
    X, Y = mnist_small
    X = X[:40]
    unet, gen = mymodels.unet((32, 32, 1)), mymodels.gen((32, 32, 1), 2)
    clf = mymodels.classifier((32, 32, 1), 10)
    t = trainer(clf, 'adv', 'otsu', gen, [unet], seed=0, masks_once=True)
    once = mytrainers.unet_masks(unet, X, 'otsu', batch_size=16)
    assert once.dtype == np.uint8 and once.shape == (40, 32, 32, 1)
    step = t.masks(X)[0].numpy()
    assert 0.05 < step.mean() < 0.95   # masks that differ between pixels
    np.testing.assert_array_equal(once, step.astype(np.uint8))
    np.testing.assert_array_equal(mytrainers.unet_masks(unet, (X * 255).round().astype(np.uint8), 'otsu'), once)
    half = np.zeros([4, 32, 32, 1], np.float32)
    half[:, :, :16] = 1
    np.testing.assert_array_equal(t.masks(X[:4], given=tf.constant(half))[0].numpy(), half)
    t.compile(optimizer=keras.optimizers.Adam(1e-3), gen_optimizer=mymodels.adam(1e-4))
    t.build_all(X[:1])
    ds = t.batches(mydatagen.batches(X, Y[:40], 8, seed=0, masks=once), 8)
    first = next(iter(ds))
    assert set(first) >= {'image', 'mask', 'label'} and first['mask'].shape == (8, 32, 32, 1)
    before = [w.numpy().copy() for w in unet.weights]
    h = t.fit(ds, steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(h.history['ce'][0])
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, unet.weights))
    assert phase3('adv', 'otsu', [unet], masks_once=True).record()['masks_once'] is True
    assert 'masks_once' not in phase3('adv', 'otsu', [unet]).record()   # records from before it still match


def test_white_background_penalty(mnist_small):
    """1-channel adv: the generator pays relu(mean(B) - 0.5), so all-white backgrounds lose."""
    X, Y = mnist_small
    gen = mymodels.gen((32, 32, 1), 2)
    clf = mymodels.classifier((32, 32, 1), 10)
    t = trainer(clf, 'adv', '0.5', gen, seed=0)
    t.compile(optimizer=keras.optimizers.SGD(0.0), gen_optimizer=keras.optimizers.SGD(0.0))
    t.build_all(X[:1])
    last = gen.layers[-1]
    last.bias.assign(tf.fill(last.bias.shape, 8.0))    # sigmoid(8+...) ~ white backgrounds
    z = tf.random.normal([16, 4, mymodels.noise_size(gen)])
    logs = t.train_step({'image': tf.constant(X[:16]), 'noise': z, 'label': tf.constant(Y[:16])})
    B = t.painter.tiles(z, training=False)
    assert float(tf.reduce_mean(B)) > 0.9
    assert float(logs['adv_loss']) == pytest.approx(-float(logs['ce']) + float(tf.reduce_mean(B)) - 0.5, abs=0.05)


def test_mask_computed_on_the_augmented_image(mnist_small):
    """FIX: the mask comes from the very image that is trained on (after augmentation)."""
    X, _ = mnist_small
    Xa = mydatagen.augment(X[:8], [0, 1]).numpy()
    t = trainer(mymodels.classifier((32, 32, 1), 10), 'black', '0.5')
    M, _ = t.masks(tf.constant(Xa))
    np.testing.assert_array_equal(M.numpy(), (Xa > 0).astype(np.float32))
    assert not np.array_equal(M.numpy(), (X[:8] > 0).astype(np.float32))


# --- bad input: one line, non-zero exit, nothing written -----------------------------------------

@pytest.fixture(scope='module')
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp('models')
    mymodels.save(mymodels.classifier((32, 32, 1), 10), str(d / 'clf.keras'))
    mymodels.save(mymodels.unet((32, 32, 1)), str(d / 'unet.keras'))
    mymodels.save(mymodels.classifier((28, 28, 1), 10), str(d / 'clf28.keras'))
    mymodels.save(mymodels.classifier((32, 32, 1), 5), str(d / 'clf5.keras'))
    (d / 'garbage.keras').write_bytes(b'\x00' * 100)
    return d


def bad_cases(m, o):
    """Bad input found once TensorFlow has started (the argument checks before it: test_cli.py)."""
    yield 'missing model', ('train2.py', 'mnist', m / 'nope.keras', 'otsu', '--output', o), 'does not exist'
    yield 'garbage model', ('evaluate.py', 'mnist', m / 'garbage.keras'), 'cannot load model'
    yield 'unet as classifier', ('train3.py', 'mnist', m / 'unet.keras', 'heuristic', 'otsu', 'adv', '--output', o), 'mask generator'
    yield 'classifier as unet', ('train3.py', 'mnist', m / 'clf.keras', m / 'clf.keras', 'otsu', 'adv', '--output', o), 'is a classifier'
    yield 'input shape', ('evaluate.py', 'mnist', m / 'clf28.keras'), r'\(28, 28, 1\)'
    yield 'class count', ('train2.py', 'mnist', m / 'clf5.keras', 'otsu', '--output', o), '5 outputs.*10 classes'
    yield 'tiles', ('train3.py', 'mnist', m / 'clf.keras', 'heuristic', 'otsu', 'adv', '--tiles', 3, '--output', o), 'tiles'
    yield 'masks once, no U-Net', ('train3.py', 'mnist', m / 'clf.keras', 'heuristic', 'otsu', 'adv', '--masks-once',
                                   '--output', o), 'needs one U-Net file'
    yield 'masks once, two U-Nets', ('train3.py', 'mnist', m / 'clf.keras', f'{m / "unet.keras"},{m / "unet.keras"}',
                                     'otsu', 'adv', '--masks-once', '--output', o), 'needs one U-Net file'
    yield 'masks once, jitter', ('train3.py', 'mnist', m / 'clf.keras', m / 'unet.keras', 'jitter', 'adv', '--masks-once',
                                 '--output', o), 'otsu or 0.5'
    yield 'batch larger than data', ('train1.py', 'mnist', '--subset', 4, '--batchsize', 8, '--output', o), 'larger than'


CASES = list(bad_cases(__import__('pathlib').Path('/M'), __import__('pathlib').Path('/O/out.keras')))


@pytest.mark.parametrize('i', range(len(CASES)), ids=[c[0] for c in CASES])
def test_bad_input(i, models, tmp_path, real_data):
    """In-process (the one-line contract of a real process: test_cli.py, test_folders.py)."""
    import re
    out = tmp_path / 'out.keras'
    _, args, pattern = list(bad_cases(models, out))[i]
    r = inprocess(*args)
    line = one_line_error(r)
    assert re.search(pattern, line), line
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)   # nothing written


def test_cosine_schedule():
    sched = mymodels.learning_rate(1e-3, 'cosine', 100)
    assert float(sched(0)) == pytest.approx(1e-3) and float(sched(100)) == pytest.approx(0, abs=1e-9)
    assert mymodels.learning_rate(1e-3) == 1e-3


@pytest.mark.slow
def test_cosine_schedule_and_gen_lr(real_data, tmp_path):
    clf = tmp_path / 'c.keras'
    mymodels.save(mymodels.classifier((32, 32, 1), 10), str(clf))
    out = tmp_path / 'p3.keras'
    r = script('train3.py', 'mnist', clf, 'heuristic', 'otsu', 'adv', '--epochs', 1, '--subset', 64, '--test-subset', 32,
               '--batchsize', 32, '--lr-schedule', 'cosine', '--gen-lr', 1e-4, '--output', out)
    assert r.returncode == 0, r.stderr
    assert 'lr-schedule-cosine---gen-lr-0.0001' in r.stdout.strip().splitlines()[-1]
    assert keras.models.load_model(out).output_shape == (None, 10)


def _sgd_steps(trainer_or_clf, X, Y, extra, steps):
    """`steps` SGD steps, one batch of 16 each, in a fixed order (no augmentation). extra: the
    named parts beside the images and labels (phase 3), or None (a classifier: (X, Y))."""
    for i in range(steps):
        sl = slice(16 * i, 16 * (i + 1))
        X_, Y_ = tf.constant(X[sl]), tf.constant(Y[sl])
        trainer_or_clf.train_step((X_, Y_) if extra is None else
                                  {'image': X_, 'label': Y_, **{k: v[sl] for k, v in extra.items()}})


def test_clean_share_trains_on_the_images_as_they_are(mnist_small):
    """clean_share=1: every image keeps its own background, so phase 3 takes the very steps of
    phase 1 on the same batches; clean_share=0 with noise backgrounds takes other steps."""
    X, Y = mnist_small
    start = mymodels.classifier((32, 32, 1), 10)
    results = {}
    for share in (1.0, 0.0, None):
        clf = keras.models.clone_model(start)
        clf.set_weights(start.get_weights())
        if share is None:   # phase 1's own step
            clf.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            _sgd_steps(clf, X, Y, None, 3)
        else:
            t = trainer(clf, 'noise', clean_share=share, seed=0)
            t.compile(optimizer=keras.optimizers.SGD(0.1))
            noise = tf.random.normal((48, 32, 32, 1), seed=1)
            u = tf.random.uniform((48,), seed=2)
            _sgd_steps(t, X, Y, {'background': noise, **({'share': u} if share > 0 else {})}, 3)
        results[share] = clf.get_weights()
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(results[1.0], results[None]))
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(results[0.0], results[None]))


def test_clean_back_black_shows_the_clean_share_the_object_alone(mnist_small):
    """clean_back black with the data set's own masks: the clean share's images are trained on
    through their masks, on black. With clean_share=1, images that carry a background of their
    own (0.4 outside the digit) then take phase 1's steps on the digits alone; clean_back own,
    phase 1's steps on the images with their background."""
    X, Y = mnist_small
    M = (X > 0).astype(np.float32)
    backed = np.where(M > 0, X, np.float32(0.4))
    start = mymodels.classifier((32, 32, 1), 10)
    results = {}
    for key in ('black', 'own', 'alone', 'backed'):
        clf = keras.models.clone_model(start)
        clf.set_weights(start.get_weights())
        if key in ('alone', 'backed'):   # phase 1's own step
            clf.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            _sgd_steps(clf, X if key == 'alone' else backed, Y, None, 3)
        else:
            s = mysettings.Phase3(dataset='biased_mnist_0.99', model='clf.keras', unet_model='masks',
                                  binarize_mask='0.5', back='noise', clean_share=1.0, clean_back=key, seed=0)
            t = mytrainers.BackgroundTrainer(clf, s)
            t.compile(optimizer=keras.optimizers.SGD(0.1))
            extra = {'mask': tf.constant(M), 'background': tf.random.normal((48, 32, 32, 1), seed=1),
                     'share': tf.random.uniform((48,), seed=2)}
            _sgd_steps(t, backed, Y, extra, 3)
        results[key] = clf.get_weights()
    same = lambda a, b: all(np.allclose(u, v, atol=1e-6) for u, v in zip(results[a], results[b]))
    assert same('black', 'alone') and same('own', 'backed') and not same('black', 'own')


def test_clean_back_needs_a_clean_share():
    with pytest.raises(mycli.UserError, match='--clean-share'):
        phase3(clean_back='black').check()


def test_clean_share_draws_come_with_the_batches(mnist_small):
    X, Y = mnist_small
    t = trainer(mymodels.classifier((32, 32, 1), 10), 'adv', gen=mymodels.gen((32, 32, 1), 2), clean_share=0.3)
    batch = next(iter(t.batches(mydatagen.batches(X, Y, 16, seed=0), 16, seed=5)))
    assert sorted(batch) == ['image', 'label', 'noise', 'share']
    assert batch['noise'].shape == (16, 4, 16) and batch['share'].shape == (16,)
    u = batch['share'].numpy()
    assert ((u >= 0) & (u < 1)).all() and u.std() > 0.1   # uniform draws, one per image
    again = next(iter(t.batches(mydatagen.batches(X, Y, 16, seed=0), 16, seed=5)))
    np.testing.assert_array_equal(again['share'].numpy(), u)   # seeded


def test_weight_average(mnist_small):
    """average=N: a moving average with momentum 1 - 1/N of the classifier's weights after each
    step, from its starting weights; average.averaged() swaps it in, average.adopt() keeps it."""
    X, Y = mnist_small
    clf = mymodels.classifier((32, 32, 1), 10)
    t = trainer(clf, 'noise', average=4, seed=0)
    t.compile(optimizer=keras.optimizers.SGD(0.1))
    expected = [w.numpy().copy() for w in clf.weights]
    noise = tf.random.normal((48, 32, 32, 1), seed=1)
    for i in range(3):
        _sgd_steps(t, X[16 * i:], Y[16 * i:], {'background': noise[16 * i:]}, 1)
        expected = [0.75 * e + 0.25 * w.numpy() for e, w in zip(expected, clf.weights)]
    raw = [w.numpy().copy() for w in clf.weights]
    with t.average.averaged():
        inside = [w.numpy().copy() for w in clf.weights]
    assert all(np.allclose(a, e, atol=1e-6) for a, e in zip(inside, expected))
    assert not all(np.allclose(a, r, atol=1e-4) for a, r in zip(inside, raw))
    assert all(np.array_equal(w.numpy(), r) for w, r in zip(clf.weights, raw))   # swapped back
    t.average.adopt()
    assert all(np.allclose(w.numpy(), e, atol=1e-6) for w, e in zip(clf.weights, expected))


@pytest.mark.parametrize('white', [False, True])
@pytest.mark.parametrize('clean', ['none', 'some', 'all'])
def test_phase3_step_gradients(mnist_small, white, clean):
    """One step of phase 3 (adv) moves the classifier along -grad ce and the generator along
    -grad(-ce + relu(mean(B) - 0.5)), as two separate tapes compute them (the trainer shares one
    backward pass through the classifier between the players). white: the penalty is active.
    clean: with clean_share, the images drawn to keep their own background are trained on as they
    are, the penalty is over the backgrounds of the others: the trainer paints only those, which
    must give the steps of painting every image and discarding (all: a batch with none to paint)."""
    X, Y = mnist_small
    X, Y = tf.constant(X[:16]), tf.constant(Y[:16])
    clf, gen = mymodels.classifier((32, 32, 1), 10), mymodels.gen((32, 32, 1), 2)
    gen.layers[-1].bias.assign(tf.fill(gen.layers[-1].bias.shape, 3.0 if white else -3.0))   # light / dark
    share = 0.0 if clean == 'none' else 0.5
    u = tf.constant(np.random.default_rng(1).random(16) * (0.5 if clean == 'all' else 1.0), tf.float32)
    keep = (u < share).numpy()
    assert keep.all() if clean == 'all' else (0 < keep.sum() < 16 if clean == 'some' else not keep.any())
    t = trainer(clf, 'adv', gen=gen, seed=0, clean_share=share)
    t.compile(optimizer=keras.optimizers.SGD(1.0), gen_optimizer=keras.optimizers.SGD(1.0))
    z = tf.random.normal([16, 4, mymodels.noise_size(gen)], seed=4)
    start = {m.name: [w.numpy().copy() for w in m.trainable_variables] for m in (clf, gen)}
    M, _ = t.masks(X)
    with tf.GradientTape(persistent=True) as tape:
        B = t.painter.tiles(z)
        Z = tf.where(keep[:, None, None, None], X, t.composite(X, M, B))
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(Y, clf(Z, training=True))
        painted = tf.boolean_mask(B, ~keep)
        adv = -ce + (tf.nn.relu(tf.reduce_mean(painted) - 0.5) if clean != 'all' else 0.0)
    expected = {clf.name: tape.gradient(ce, clf.trainable_variables),
                gen.name: tape.gradient(adv, gen.trainable_variables)}
    assert (float(tf.reduce_mean(B)) > 0.5) == white
    t.train_step({'image': X, 'noise': z, 'label': Y, **({'share': u} if share else {})})
    for m in (clf, gen):
        for w0, w, g in zip(start[m.name], m.trainable_variables, expected[m.name]):
            if g is None:   # all clean: the generator takes no part
                np.testing.assert_array_equal(w0, w.numpy())
            else:
                np.testing.assert_allclose(w0 - w.numpy(), g.numpy(), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize('dim', ['gray', 'all'])
def test_brightness_penalty_on_colour_images(dim):
    """--dim: the generator's penalty relu(mean(B) - 0.5) is on 1-channel images only (published),
    or with dim=all on colour images too (Biased-MNIST's white digits vanish on white backgrounds)."""
    clf, gen = mymodels.classifier((32, 32, 3), 10), mymodels.gen((32, 32, 3), 2)
    t = trainer(clf, 'adv', gen=gen, seed=0, dim=dim)
    ce, light = tf.constant(1.25), tf.fill([4, 32, 32, 3], 0.8)
    expected = -1.25 + (0.3 if dim == 'all' else 0.0)
    assert float(t.painter.loss(ce, light)) == pytest.approx(expected, abs=1e-5)
    assert float(t.painter.loss(ce, light * 0.5)) == pytest.approx(-1.25, abs=1e-6)   # dark: no penalty


def test_dim_cap_keeps_white_out_of_the_backgrounds():
    """--dim cap: each painted pixel is lowered by the excess of its darkest channel over 0.5, so
    no pixel is lighter than mid-grey in every channel, while saturated colours pass unchanged."""
    clf, gen = mymodels.classifier((32, 32, 3), 10), mymodels.gen((32, 32, 3), 2)
    z = tf.random.normal([6, 4, mymodels.noise_size(gen)], seed=3)
    gen.layers[-1].bias.assign(tf.fill(gen.layers[-1].bias.shape, 4.0))   # near white
    free = trainer(clf, 'adv', gen=gen, seed=0).painter.tiles(z).numpy()
    capped = trainer(clf, 'adv', gen=gen, seed=0, dim='cap').painter.tiles(z).numpy()
    assert free.min(-1).mean() > 0.9 and capped.min(-1).max() <= 0.5 + 1e-6
    np.testing.assert_allclose(capped, free - (free.min(-1, keepdims=True) - 0.5), atol=1e-6)
    gen.layers[-1].bias.assign(tf.constant([4.0, -4.0, -4.0]))   # near red: its darkest channel is dark
    red = trainer(clf, 'adv', gen=gen, seed=0, dim='cap').painter.tiles(z).numpy()
    np.testing.assert_array_equal(red, trainer(clf, 'adv', gen=gen, seed=0).painter.tiles(z).numpy())


def test_back_shuffle_reorders_the_painted_colours_only():
    """--back-shuffle P: an image with u < P gets its painted background with the colour channels in
    order CHANNEL_ORDERS[floor(6 u / P)], the others the background as painted; the object is never
    touched; both players' gradients are those of that composite. 1-channel images: one line."""
    X = tf.constant(np.random.default_rng(0).random((12, 32, 32, 3)), tf.float32)
    Y = tf.constant(np.arange(12) % 10)
    clf, gen = mymodels.classifier((32, 32, 3), 10), mymodels.gen((32, 32, 3), 2)
    t = trainer(clf, 'adv', gen=gen, seed=0, back_shuffle=0.6)
    t.compile(optimizer=keras.optimizers.SGD(1.0), gen_optimizer=keras.optimizers.SGD(1.0))
    gen.layers[-1].bias.assign(tf.constant([2.0, -2.0, 0.0]))   # reddish: each order shows
    u = tf.constant(np.linspace(0.0, 0.99, 12), tf.float32)   # below 0.6: every order
    z = tf.random.normal([12, 4, mymodels.noise_size(gen)], seed=4)
    B = t.painter.tiles(z).numpy()
    orders = [mytrainers.CHANNEL_ORDERS[int(6 * v / 0.6)] if v < 0.6 else (0, 1, 2) for v in u.numpy()]
    assert len(set(orders[:8])) == 6                       # every order is drawn, and some keep theirs
    shown = np.stack([b[..., list(o)] for b, o in zip(B, orders)])
    B2, fresh, _ = t.painter.paint({'noise': z, 'shuffle': u}, None)
    np.testing.assert_allclose(B2.numpy(), shown, atol=1e-6)
    np.testing.assert_allclose(fresh.numpy(), shown, atol=1e-6)
    assert orders[2] != (0, 1, 2) and np.abs(shown[2] - B[2]).max() > 0.3   # a reorder that shows
    start = {m.name: [w.numpy().copy() for w in m.trainable_variables] for m in (clf, gen)}
    M, _ = t.masks(X)
    with tf.GradientTape(persistent=True) as tape:
        Bt = t.painter.tiles(z)
        Zt = t.composite(X, M, tf.stack([tf.gather(Bt[i], list(o), axis=-1) for i, o in enumerate(orders)]))
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(Y, clf(Zt, training=True))
        adv = -ce   # colour images: no brightness penalty (dim=gray)
    expected = {clf.name: tape.gradient(ce, clf.trainable_variables), gen.name: tape.gradient(adv, gen.trainable_variables)}
    t.train_step({'image': X, 'noise': z, 'shuffle': u, 'label': Y})
    for m in (clf, gen):
        for w0, w, g in zip(start[m.name], m.trainable_variables, expected[m.name]):
            np.testing.assert_allclose(w0 - w.numpy(), g.numpy(), rtol=1e-3, atol=1e-6)
    assert 'shuffle' in t.draws()
    with pytest.raises(mycli.UserError, match='--back-shuffle .* 1 channel'):
        trainer(mymodels.classifier((32, 32, 1), 10), 'adv', gen=mymodels.gen((32, 32, 1), 2), back_shuffle=0.5)
    with pytest.raises(mycli.UserError, match='--back-shuffle .* needs back=adv'):
        phase3('black', back_shuffle=0.5).check()


def test_replay_pool_is_a_uniform_sample_of_everything_painted():
    """Reservoir sampling: the first N backgrounds fill the pool in order; after that the pool
    stays a uniform sample of all painted so far (a ring buffer would hold only the last N)."""
    clf, gen = mymodels.classifier((32, 32, 1), 10), mymodels.gen((32, 32, 1), 2)
    t = trainer(clf, 'adv', gen=gen, replay=0.25, history=50).past
    ids = lambda: np.round(t.pool.numpy()[:, 0, 0, 0]).astype(int)
    for k in range(0, 1000, 4):   # 4 backgrounds a step, background k filled with the number k
        t.remember(tf.constant(np.arange(k, k + 4, dtype=np.float32)[:, None, None, None] * np.ones((1, 32, 32, 1), np.float32)))
        if k == 44:   # 48 painted: in order, in the first 48 slots
            assert ids()[:48].tolist() == list(range(48))
    assert int(t.seen.numpy()) == 1000
    held = ids()
    assert len(set(held.tolist())) == 50                      # no background twice
    assert 15 <= (held < 500).sum() <= 35                     # early and late ones alike
    assert (held < 200).sum() >= 3 and (held >= 800).sum() >= 3


def test_replay_step(mnist_small):
    """replay: of the images that get a background, those drawn to replay get one from the pool
    (here every slot holds the same picture P), the others a fresh one; the classifier learns on
    all, the generator only through the fresh ones, and only they are remembered."""
    X, Y = mnist_small
    X, Y = tf.constant(X[:16]), tf.constant(Y[:16])
    clf, gen = mymodels.classifier((32, 32, 1), 10), mymodels.gen((32, 32, 1), 2)
    t = trainer(clf, 'adv', gen=gen, seed=0, clean_share=0.25, replay=0.5, history=8)
    t.compile(optimizer=keras.optimizers.SGD(1.0), gen_optimizer=keras.optimizers.SGD(1.0))
    P = np.random.default_rng(5).random((32, 32, 1)).astype(np.float32)
    t.past.pool.assign(np.repeat(P[None], 8, 0))
    t.past.seen.assign(8)
    u = tf.constant(np.linspace(0.01, 0.99, 16), tf.float32)
    own, replayed, fresh = (u < 0.25).numpy(), ((u >= 0.25) & (u < 0.75)).numpy(), (u >= 0.75).numpy()
    assert own.sum() and replayed.sum() and fresh.sum()
    z = tf.random.normal([16, 4, mymodels.noise_size(gen)], seed=4)
    start = {m.name: [w.numpy().copy() for w in m.trainable_variables] for m in (clf, gen)}
    M, _ = t.masks(X)
    with tf.GradientTape(persistent=True) as tape:
        B = t.painter.tiles(z)
        Z = tf.where(own[:, None, None, None], X,
                     tf.where(replayed[:, None, None, None], t.composite(X, M, P[None]), t.composite(X, M, B)))
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(Y, clf(Z, training=True))
        adv = -ce + tf.nn.relu(tf.reduce_mean(tf.boolean_mask(B, fresh)) - 0.5)
    expected = {clf.name: tape.gradient(ce, clf.trainable_variables), gen.name: tape.gradient(adv, gen.trainable_variables)}
    t.train_step({'image': X, 'noise': z, 'share': u, 'label': Y})
    for m in (clf, gen):
        for w0, w, g in zip(start[m.name], m.trainable_variables, expected[m.name]):
            np.testing.assert_allclose(w0 - w.numpy(), g.numpy(), rtol=1e-3, atol=1e-6)
    assert int(t.past.seen.numpy()) == 8 + fresh.sum()      # only the fresh ones are remembered


@pytest.mark.parametrize('kw', [dict(clean_share=0.5, replay=0.25, back_flip=0.5), dict(back_flip=0.5),
                                dict(clean_share=0.25)], ids=['replay', 'mirror', 'clean'])
def test_one_backward_pass_gives_the_two_passes_numbers(mnist_small, kw):
    """The step takes both players' gradients from one backward pass through the classifier
    (Painted.gradients); the generator's, differentiated through the classifier a second time as
    the published code does, are the same to the bit, and so are the weights after a few steps."""
    X, Y = mnist_small
    rng = np.random.default_rng(3)
    batches = [{'image': tf.constant(X[i:i + 8]), 'label': tf.constant(Y[i:i + 8]),
                'noise': tf.constant(rng.normal(size=(8, 4, 16)), tf.float32),
                'share': tf.constant(rng.random(8), tf.float32), 'mirror': tf.constant(rng.random(8), tf.float32)}
               for i in range(0, 32, 8)]

    def made():
        keras.utils.set_random_seed(0)
        clf, gen = mymodels.classifier((32, 32, 1), 10), mymodels.gen((32, 32, 1), 2)
        gen.layers[-1].bias.assign(tf.fill(gen.layers[-1].bias.shape, 0.5))   # light: the penalty takes part
        t = trainer(clf, 'adv', gen=gen, seed=0, history=8, **kw)
        t.compile(optimizer=keras.optimizers.Adam(1e-3), gen_optimizer=keras.optimizers.Adam(1e-3))
        t.build_all(X[:1])
        return t

    def two_passes(t, batch):   # the step as it was: the generator's loss differentiated on its own
        rows, part = t.painted_part(batch)
        M, _ = t.masks(part['image'])
        with tf.GradientTape(persistent=True) as tape:
            B, fresh, _ = t.painter.paint(part, None if rows is None else tf.size(rows))
            Z = t.composite(part['image'], M, B)
            if rows is not None:
                Z = tf.tensor_scatter_nd_update(batch['image'], rows[:, None], Z[:tf.size(rows)])
            ce = mytrainers._ce(batch['label'], t.classifier(Z, training=True))
            adv = t.painter.loss(ce, fresh)
        t.optimizer.apply(tape.gradient(ce, t.classifier.trainable_variables), t.classifier.trainable_variables)
        t.painter.learn(tape.gradient(adv, t.gen.trainable_variables), fresh)

    one, two = made(), made()
    step_one, step_two = tf.function(one.train_step), tf.function(lambda b: two_passes(two, b))
    for b in batches:
        b = {k: v for k, v in b.items() if k in one.draws() or k in ('image', 'label')}
        step_one(b)
        step_two(b)
    for a, b in zip(one.classifier.weights + one.gen.weights, two.classifier.weights + two.gen.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(one.gen.weights[0].numpy(), made().gen.weights[0].numpy())   # it did learn


def test_back_flip_mirrors_the_painted_backgrounds_only(mnist_small):
    """back_flip: the images drawn to mirror get the generator's background mirrored left to right,
    the digit as it is; the others the background as painted, and the clean share its own. Both
    players' gradients are those of that composite."""
    X, Y = mnist_small
    X, Y = tf.constant(X[:16]), tf.constant(Y[:16])
    clf, gen = mymodels.classifier((32, 32, 1), 10), mymodels.gen((32, 32, 1), 2)
    t = trainer(clf, 'adv', gen=gen, seed=0, clean_share=0.25, back_flip=0.5)
    t.compile(optimizer=keras.optimizers.SGD(1.0), gen_optimizer=keras.optimizers.SGD(1.0))
    u = tf.constant(np.linspace(0.01, 0.99, 16), tf.float32)                 # the first 4 keep their own
    flip = tf.constant(np.random.default_rng(3).random(16), tf.float32)
    mirrored = (flip < 0.5).numpy() & (u >= 0.25).numpy()
    assert mirrored.sum() and ((flip >= 0.5).numpy() & (u >= 0.25).numpy()).sum()
    z = tf.random.normal([16, 4, mymodels.noise_size(gen)], seed=4)
    start = {m.name: [w.numpy().copy() for w in m.trainable_variables] for m in (clf, gen)}
    M, _ = t.masks(X)
    with tf.GradientTape(persistent=True) as tape:
        B = t.painter.tiles(z)
        shown = tf.where(mirrored[:, None, None, None], B[:, :, ::-1], B)
        Z = tf.where((u < 0.25)[:, None, None, None], X, t.composite(X, M, shown))
        ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(Y, clf(Z, training=True))
        adv = -ce + tf.nn.relu(tf.reduce_mean(B[4:]) - 0.5)
    expected = {clf.name: tape.gradient(ce, clf.trainable_variables), gen.name: tape.gradient(adv, gen.trainable_variables)}
    assert not np.allclose(B.numpy()[mirrored], B.numpy()[mirrored][:, :, ::-1])   # a mirror that shows
    t.train_step({'image': X, 'noise': z, 'share': u, 'mirror': flip, 'label': Y})
    for m in (clf, gen):
        for w0, w, g in zip(start[m.name], m.trainable_variables, expected[m.name]):
            np.testing.assert_allclose(w0 - w.numpy(), g.numpy(), rtol=1e-3, atol=1e-6)
    ds = t.batches(tf.data.Dataset.from_tensors((X, Y)), 16, seed=0)
    assert sorted(next(iter(ds))) == ['image', 'label', 'mirror', 'noise', 'share']
    with pytest.raises(mycli.UserError, match='--back-flip .* needs back=adv'):
        phase3('black', back_flip=0.5).check()


def test_replay_waits_for_a_first_background(mnist_small):
    """At the very first step the pool is empty: every image that gets a background gets a fresh one."""
    X, Y = mnist_small
    t = trainer(mymodels.classifier((32, 32, 1), 10), 'adv', gen=mymodels.gen((32, 32, 1), 2), replay=0.9, history=16)
    t.compile(optimizer=keras.optimizers.SGD(0.0), gen_optimizer=keras.optimizers.SGD(0.0))
    z = tf.random.normal([16, 4, mymodels.noise_size(t.gen)])
    batch = {'image': tf.constant(X[:16]), 'noise': z, 'share': tf.constant(np.full(16, 0.5, np.float32)),
             'label': tf.constant(Y[:16])}
    t.train_step(batch)
    assert int(t.past.seen.numpy()) == 16
    t.train_step(batch)
    assert int(t.past.seen.numpy()) == 16   # now every one of them is replayed


def test_fresh_generators(mnist_small):
    """generator_every=N with FreshGenerators: before step N, 2N, ... the generator takes new seeded
    weights (the same round, the same weights; another round, others) and its optimiser's moments
    are zeroed while its step count goes on; a run of 7 steps every 3 ends in round 2, one step
    away from round 2's fresh weights."""
    X, Y = mnist_small
    def fresh():
        keras.utils.set_random_seed(0)
        # 3 generators over 7 steps: a fresh one every ceil(7 / 3) = 3 steps
        t = trainer(mymodels.classifier((32, 32, 1), 10), 'adv', gen=mymodels.gen((32, 32, 1), 2), seed=5,
                    generators=3, total_steps=7)
        t.compile(optimizer=keras.optimizers.Adam(1e-3), gen_optimizer=keras.optimizers.Adam(1e-4))
        t.build_all(tf.constant(X[:1]))
        t.gen_optimizer.build(t.gen.trainable_variables)
        return t
    t = fresh()
    assert t.generator_every == 3
    weights = lambda: [w.numpy().copy() for w in t.gen.weights]
    ds = t.batches(mydatagen.batches(X[:112], Y[:112], 16, seed=0, augment_data=False), 16, seed=0)
    t.fit(ds, steps_per_epoch=7, epochs=1, verbose=0, callbacks=[mytrainers.FreshGenerators(t)])
    assert int(t.generator_round.numpy()) == 2 and int(t.gen_optimizer.iterations.numpy()) == 7
    trained = weights()
    moments = [v for v in t.gen_optimizer.variables if len(v.shape)]
    assert moments and any(np.abs(v.numpy()).max() > 0 for v in moments)
    t.painter.restart(2)
    fresh2 = weights()
    assert all(not np.abs(v.numpy()).any() for v in moments) and int(t.gen_optimizer.iterations.numpy()) == 7
    assert max(np.abs(a - b).max() for a, b in zip(trained, fresh2)) < 1e-3   # one Adam step at 1e-4
    t.painter.restart(2)
    assert all(np.array_equal(a, b) for a, b in zip(weights(), fresh2))
    t.painter.restart(3)
    assert not any(np.array_equal(a, b) for a, b in zip(weights(), fresh2) if a.any())


def test_trainers_in_bfloat16(mnist_small):
    """--precision bfloat16: phase 2 and phase 3 train models computing in bfloat16 (U-Net masks,
    adversarial backgrounds, composites): finite losses, float32 weights that move, the frozen
    models unchanged."""
    X, Y = mnist_small
    P = lambda m: mymodels.in_precision(m, 'bfloat16')
    clf, unet, gen = P(mymodels.classifier((32, 32, 1), 10)), P(mymodels.unet((32, 32, 1))), P(mymodels.gen((32, 32, 1), 2))
    snapshot = lambda m: [w.numpy().copy() for w in m.weights]
    changed = lambda m, before: any(not np.array_equal(a, w.numpy()) for a, w in zip(before, m.weights))
    t3 = trainer(clf, 'adv', 'otsu', gen, [unet], seed=0, clean_share=0.5, replay=0.25, average=4)
    t3.compile(optimizer=keras.optimizers.Adam(1e-3), gen_optimizer=mymodels.adam(1e-4))
    t3.build_all(X[:1])
    before = {m.name: snapshot(m) for m in (clf, unet, gen)}
    h = t3.fit(t3.batches(mydatagen.batches(X, Y, 16, seed=0), 16), steps_per_epoch=3, epochs=1, verbose=0)
    assert np.isfinite(h.history['ce'][0]) and h.history['adv_loss'][0] < 0
    assert changed(clf, before[clf.name]) and changed(gen, before[gen.name]) and not changed(unet, before[unet.name])
    assert all(w.dtype == 'float32' for m in (clf, gen) for w in m.weights)
    unet = P(mymodels.unet((32, 32, 1)))   # (phase 3 froze the other one)
    t2 = mytrainers.MaskTrainer(clf, unet)
    t2.compile(optimizer=mymodels.adam(1e-3))
    before = {m.name: snapshot(m) for m in (clf, unet)}
    h = t2.fit(mydatagen.batches(X, Y, 16, seed=0), steps_per_epoch=3, epochs=1, verbose=0)
    assert all(np.isfinite(v[0]) for v in h.history.values())
    assert changed(unet, before[unet.name]) and not changed(clf, before[clf.name])


@pytest.mark.slow   # runs the scripts as subprocesses (TensorFlow starts in each)
def test_gen_span_stops_the_generator(real_data, tmp_path):
    """--gen-span 0.25 over 2 epochs of 4 steps: the generator's rate decays to 0 within the first
    epoch, so between the checkpoints of epochs 1 and 2 (a kill after the second is renamed keeps
    both) the generator's weights stay as they were while the classifier's move on."""
    import h5py
    clf = tmp_path / 'c.keras'
    mymodels.save(mymodels.classifier((32, 32, 1), 10), str(clf))
    r = script('train3.py', 'mnist', clf, 'heuristic', 'otsu', 'adv', '--epochs', 2, '--subset', 64, '--test-subset', 32,
               '--batchsize', 16, '--lr-schedule', 'cosine', '--gen-lr', 1e-3, '--gen-span', 0.25,
               '--output', tmp_path / 'p3.keras', env={**os.environ, 'BIAL_FAULT': 'checkpoint-renamed@2'})
    assert r.returncode != 0   # killed on purpose
    def weights(epoch, model):
        with h5py.File(tmp_path / 'p3-checkpoint' / f'epoch-{epoch:04d}' / 'state.weights.h5') as f:
            names = []
            f[model].visit(lambda n: names.append(n) if isinstance(f[model][n], h5py.Dataset) else None)
            return [f[model][n][()] for n in sorted(names)]
    same = lambda model: all(np.array_equal(a, b) for a, b in zip(weights(1, model), weights(2, model)))
    assert len(weights(1, 'gen')) == 8 and same('gen')
    assert not same('classifier')


@pytest.mark.slow   # three whole (small) runs of train3.py
def test_report_end_and_none_train_the_same(real_data, tmp_path):
    """--report end skips the evaluations between epochs only: the same classifier to the bit and
    the same final line as --report epoch, its log with the accuracies on the last epoch's row
    only. --report none (what reproduce.py's test-set runs use): the same classifier, no final
    line, no accuracies in the log."""
    import csv
    clf = tmp_path / 'c.keras'
    mymodels.save(mymodels.classifier((32, 32, 1), 10), str(clf))
    lines, weights = {}, {}
    for report in ('epoch', 'end', 'none'):
        out = tmp_path / f'{report}.keras'
        r = inprocess('train3.py', 'mnist', clf, 'heuristic', 'otsu', 'adv', '--epochs', 2, '--subset', 64,
                      '--test-subset', 32, '--batchsize', 16, '--average', 4, '--clean-share', 0.5, '--report', report,
                      '--output', out)   # in this process: the same code, without two TensorFlow start-ups
        assert r.returncode == 0, r.stderr
        lines[report] = [l.split(',')[1:] for l in r.stdout.splitlines() if l.startswith('train3.py')]
        weights[report] = mymodels.load(str(out)).get_weights()
    assert len(lines['epoch']) == 1 and lines['epoch'] == lines['end'] and lines['none'] == []
    for report in ('end', 'none'):
        assert all(np.array_equal(a, b) for a, b in zip(weights['epoch'], weights[report]))
    rows = list(csv.DictReader(open(tmp_path / 'end-log.csv')))
    assert [r['acc_test'] != '' for r in rows] == [False, True] and all(r['ce'] for r in rows)
    rows = list(csv.DictReader(open(tmp_path / 'none-log.csv')))
    assert len(rows) == 2 and all(r['ce'] for r in rows) and not any(k.startswith('acc_') for k in rows[0])
