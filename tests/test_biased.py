"""Biased-MNIST (mybiased.py) built from the real MNIST: the pixels where the digit is and is
not, each class's colour shares against rho, the unbiased test set, the masks, the validation
split, the seeded draws; bad names. Unit tier."""
import os

import numpy as np
import pytest

import mybiased
import mydatasets as md


def shares(Y, colour):
    """(10, 10): per class, the share of its images on each colour."""
    return np.array([np.bincount(colour[Y == k], minlength=10) / np.sum(Y == k) for k in range(10)])


@pytest.fixture(scope='module')
def biased(real_data):
    return md.dataset('biased_mnist_0.99', masks=True)


def colour_index(X):
    """Each image's background colour, read from its first pixel (the pad is background)."""
    match = np.all(X[:, 0, 0, None, :] == mybiased.COLOURS[None], -1)
    assert np.all(match.sum(1) == 1)
    return match.argmax(1)


def test_pixels_where_the_digit_is_and_is_not(biased, real_data):
    (X, Y), mnist = biased.train, md.dataset('mnist', 5000).train[0]
    assert X.shape == (60000, 32, 32, 3) and X.dtype == np.uint8 and biased.classes == 10
    X, ink = X[:5000], mnist[..., 0] > 0
    assert np.all(X[ink] == 255)                                  # the digit white, where MNIST is not 0
    c = colour_index(X)
    assert np.array_equal(X[~ink], np.repeat(mybiased.COLOURS[c], (~ink).reshape(len(X), -1).sum(1), 0))
    assert np.array_equal(biased.masks['train'][:5000, ..., 0], ink.astype(np.uint8))   # the digit's pixels


@pytest.mark.parametrize('rho', [0.999, 0.5])
def test_colour_shares_follow_rho(rho, real_data):
    data = md.dataset(f'biased_mnist_{rho}')
    (X, Y), tests = data.train, dict(data.tests)
    s = shares(Y, colour_index(X))
    n = np.bincount(Y)
    assert np.all(np.abs(np.diag(s) - rho) <= 0.5 / n + 1e-12)    # rho of each class on its own colour
    off = np.round(s * n[:, None]) * (1 - np.eye(10))
    others = off[~np.eye(10, dtype=bool)].reshape(10, 9)
    assert np.all(others.max(1) - others.min(1) <= 1)             # the rest evenly over the other nine
    Xu, Yu = tests['unbiased']
    assert np.all(np.abs(shares(Yu, colour_index(Xu)) - 0.1) < 0.01)   # every colour equally likely
    Xb, Yb = tests['biased']
    assert np.all(np.abs(np.diag(shares(Yb, colour_index(Xb))) - rho) <= 0.5 / np.bincount(Yb) + 1e-12)


def test_seeded_and_validation_split(biased, real_data):
    Y = biased.train[1]
    assert np.array_equal(mybiased.colours(Y, 0.99, [1, 990000]), colour_index(biased.train[0]))   # seeded:
    assert not np.array_equal(mybiased.colours(Y, 0.99, [2, 990000]), colour_index(biased.train[0]))   # the same in every run
    val = md.dataset('biased_mnist_0.99_validation')
    (X, Y), tests = val.train, dict(val.tests)
    assert len(Y) == 55000 and [n for n, _ in val.tests] == ['unbiased', 'biased']
    mnist = md.dataset('mnist').train
    assert np.array_equal(tests['unbiased'][1], mnist[1][-5000:])   # carved from the training set
    assert np.array_equal(np.all(tests['unbiased'][0] == 255, -1), mnist[0][-5000:, ..., 0] > 0)
    assert np.all(np.abs(shares(tests['unbiased'][1], colour_index(tests['unbiased'][0])) - 0.1) < 0.03)


@pytest.mark.parametrize('name', ['biased_mnist_0', 'biased_mnist_1.5', 'biased_mnist_x', 'biased_mnist_-0.5'])
def test_bad_rho(name):
    with pytest.raises(md.DataError, match=r'Biased-MNIST is biased_mnist_RHO'):
        md.check_name(name)
    assert mybiased.parse('biased_mnist_1') == (1.0, False) and mybiased.parse('mnist') is None


def test_reproduce_plan_and_table(tmp_path):
    """reproduce.py biased_mnist: per rho and seed, phase 1, phase 3 with the construction's masks,
    phase 2 and phase 3 with its U-Net (no attention baseline: the published comparison has none);
    the table holds every row at every rho, the published rows beside the unbiased accuracies,
    and the figure is drawn."""
    import myreport
    import reproduce
    phases = reproduce.plan('biased_mnist_0.99', str(tmp_path), 'fast', 0)
    assert [p.script for p in phases] == ['train1.py', 'train3.py', 'train2.py', 'train3.py']
    assert phases[1].settings.unet_model == 'masks' and phases[1].settings.masks == 'manual'
    assert phases[3].settings.masks == 'unet' and phases[3].needs == [phases[0].key, phases[2].key]
    assert {os.path.basename(p.key)[:-6] for p in phases} == set(reproduce.BIASED_ROWS.values()) | {'phase2'}
    rhos, seeds = [0.999, 0.99], [0, 1]
    results = {r: {(rho, s): {'unbiased': 50 + 10 * k + s, 'biased': 99.0} for rho in rhos for s in seeds}
               for k, r in enumerate(reproduce.BIASED_ROWS)}
    published = {r: dict(zip(mybiased.RHOS, v)) for r, v in reproduce.PUBLISHED.items()}
    text = myreport.write_biased(str(tmp_path), rhos, seeds, results, published, {'phase1': ['--epochs', 5]},
                                 {(r, s): 60.0 for r in rhos for s in seeds}, 30.0)
    assert '| Vanilla | 50.5 ± 0.7 | 50.5 ± 0.7 |' in text and '| ReBias (published) | 22.7 | 88.1 |' in text
    csv = (tmp_path / 'table.csv').read_text().splitlines()
    assert len(csv) == 1 + 3 * 2 * (2 + 2) + 3 * 2 and "Proposal (the construction's masks),0.99,std,0.71,0.00" in csv
    assert (tmp_path / 'figure.png').stat().st_size > 1000
    assert 'test set' in text and 'validation' not in text and 'none of those methods uses masks' in text
    # --validation: the sets are the validation split's, there are no published rows, and the table says so
    text = myreport.write_biased(str(tmp_path), rhos, seeds, results, {}, {'phase1': ['--epochs', 5]},
                                 {(r, s): 60.0 for r in rhos for s in seeds}, 30.0, validation=True)
    assert '## Unbiased validation set' in text and '## Biased validation set' in text and 'test set is not read' in text
    assert 'test set (' not in text and 'published' not in text and "The Proposal with the construction's masks" in text


@pytest.mark.parametrize('argv, recipe', [(['biased_mnist'], 'biased'), (['mnist'], 'fast'),
                                          (['biased_mnist', '--recipe', 'smoke'], 'smoke')])
def test_reproduce_default_recipe(monkeypatch, tmp_path, argv, recipe):
    """Biased-MNIST runs its own recipe unless --recipe names another (its default folder says
    which); the MNIST tables keep the fast one."""
    import reproduce
    seen = {}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, 'biased', lambda args, out, chief: seen.update(recipe=args.recipe, out=out))
    monkeypatch.setattr(reproduce, 'train_chains', lambda chains, recipe, *a, **k: (_ for _ in ()).throw(SystemExit(seen.update(recipe=recipe))))
    monkeypatch.setattr(reproduce.md, 'dataset', lambda name: type('S', (), {'train': (None, [0])}))
    monkeypatch.setattr('sys.argv', ['reproduce.py'] + argv)
    try:
        reproduce.main()
    except SystemExit:
        pass
    assert seen['recipe'] == recipe
    if argv[0] == 'biased_mnist':
        assert seen['out'].endswith(os.path.join('runs', f'biased_mnist-{recipe}'))


def test_the_earlier_recipe_keeps_its_command_lines():
    """`--recipe biased-b10a` runs the phases of the second Biased-MNIST test-set run to the option
    (so that its table in docs/biased_mnist.md can be measured again), and `biased` differs from it
    in phase 3 only, by the three settings chosen on the validation split (docs/biased_mnist.md, B12b)."""
    import reproduce
    line = lambda recipe: [' '.join(map(str, p.args)) for p in reproduce.plan('biased_mnist_0.999', 'O', recipe, 0)]
    old, new = line('biased-b10a'), line('biased-b12b')
    assert line('biased')[:3] == new[:3] and line('biased')[3] == new[3].replace(' --seed', ' --masks-once --seed')   # B13
    assert old[1] == ('biased_mnist_0.999 O/phase1.keras masks otsu adv --epochs 1 --batchsize 16 --lr-schedule cosine '
                      '--gen-lr 0.0001 --clean-share 0.25 --clean-back black --replay 0.25 --average 800 --flip 0 '
                      '--back-flip 0.5 --dim cap --warp 0.0 --seed 0').replace('O/', os.path.join('O', ''))
    assert old[0] == new[0] and old[2] == new[2] and old[0].endswith('--epochs 5 --batchsize 32 --lr-schedule cosine --flip 0 --seed 0')
    for row in (1, 3):   # phase 3 with the construction's masks, and with the U-Net's
        assert new[row] == old[row].replace('--epochs 1 ', '--epochs 2 ').replace('--average 800 ', '--average 1600 ') \
            .replace('--warp 0.0 ', '--warp 0.0 --back-shuffle 0.5 ')


def test_warp_leaks_the_colour_into_the_masked_digit(biased):
    """The published augmentation warps (rotation, shift, shear) with interpolation, so the pixels
    that a binarized mask keeps at the digit's rim carry the background's colour, which gives the
    label here; --warp 0 keeps them white (and the masks exactly as given), flips and brightness
    aside."""
    import tensorflow as tf
    import mydatagen
    import mytrainers
    X, Y = biased.train
    masks = biased.masks['train'][:512]

    def coloured_share(warp):
        x, m, _ = next(iter(mydatagen.batches(X[:512], Y[:512], 512, seed=0, masks=masks, flip=0, warp=warp)))
        inside = mytrainers.binarize(m, 'otsu').numpy()[..., 0] > 0.5
        chroma = x.numpy().max(-1) - x.numpy().min(-1)
        return (chroma[inside] > 0.1).mean(), m.numpy()

    leak, _ = coloured_share(1.0)
    none, m = coloured_share(0.0)
    assert leak > 0.05 and none == 0.0
    assert sorted(map(bytes, m.astype(np.uint8))) == sorted(map(bytes, masks.astype(np.uint8)))   # unwarped


def test_warp_recorded_only_when_set():
    """--warp joined the settings after runs were recorded: at its default (1) it is left out of the
    record, so those runs' checkpoints and done.json still match; set, it is recorded."""
    import mysettings
    s = mysettings.Phase1(dataset='mnist')
    assert 'warp' not in s.record()
    assert mysettings.Phase1(dataset='mnist', warp=0.0).record()['warp'] == 0.0
