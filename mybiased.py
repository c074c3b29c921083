"""Biased-MNIST: MNIST digits on a flat background colour that predicts the label (Bahng et al.,
"Learning De-biased Representations with Biased Representations", ICML 2020, the ReBias paper).

    mydatasets.dataset('biased_mnist_0.99')               # train at rho 0.99; tests: unbiased, biased
    mydatasets.dataset('biased_mnist_0.99_validation')    # train on 55,000; validate on the last 5,000
    mydatasets.dataset('biased_mnist_0.99', masks=True)   # with the digit's own pixels as masks

Each image: the digit white (255, 255, 255) where the MNIST pixel is not 0, one flat colour
elsewhere (RGB uint8; 32 x 32 as this project's MNIST, whose 2-pixel pad takes the background
colour). Within each class a share rho of the images, drawn at random, gets the class's colour;
the rest are split evenly over the other nine. The unbiased test set is the same construction at
rho = 0.1 (every colour equally likely whatever the digit), the biased one at the training rho.
The draws are seeded per set (not by a run's --seed): every run of a given rho sees the same
images. The masks are what the construction knows: the digit's own pixels.
"""
import re

import numpy as np

from mydownload import DataError

COLOURS = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (225, 225, 0), (225, 0, 225), (0, 255, 255),
                    (255, 128, 0), (255, 0, 128), (128, 0, 255), (128, 128, 128)], np.uint8)   # class k's colour
RHOS = [0.999, 0.997, 0.995, 0.990]   # the published training correlations
UNBIASED = 0.1                        # 1 / 10: the colour says nothing of the digit
PREFIX = 'biased_mnist_'
NAMES = 'biased_mnist_RHO, biased_mnist_RHO_validation (RHO in (0, 1], e.g. 0.99)'
SEEDS = {'train': 1, 'unbiased': 2, 'biased': 3}   # the colour draws of each set


def parse(name):
    """(rho, validation) of a Biased-MNIST name; None for other names; DataError for a bad rho."""
    if not name.startswith(PREFIX):
        return None
    m = re.fullmatch(r'([0-9.eE+-]+?)(_validation)?', name[len(PREFIX):])
    try:
        rho = float(m.group(1)) if m else None
    except ValueError:
        rho = None
    if rho is None or not 0 < rho <= 1:
        raise DataError(f'{name!r}: Biased-MNIST is {NAMES}; rho is the share of each class on its own colour, '
                        'a number in (0, 1]')
    return rho, bool(m.group(2))


def colours(Y, rho, seed):
    """Each image's background colour (a class index): within each class a share rho (rounded),
    drawn at random, the class's own; the others the nine other colours in turn, so that each of
    them gets an even share (within one image)."""
    rng = np.random.default_rng(seed)
    out = np.empty(len(Y), np.int64)
    for k in range(len(COLOURS)):
        idx = rng.permutation(np.flatnonzero(Y == k))
        own = int(round(rho * len(idx)))
        others = np.array([c for c in range(len(COLOURS)) if c != k])
        out[idx[:own]] = k
        out[idx[own:]] = others[rng.permutation(len(idx) - own) % len(others)]
    return out


def paint(X, colour):
    """Images X (N, H, W, 1) float in [0, 1] -> RGB uint8: white where X > 0, COLOURS[colour] elsewhere."""
    ink = X[..., 0] > 0
    out = np.broadcast_to(COLOURS[colour][:, None, None, :], ink.shape + (3,)).copy()
    out[ink] = 255
    return out


def build(train, test, rho, validation=False, validation_size=5000):
    """(Xtr, Ytr, Mtr), [('unbiased', (X, Y, M)), ('biased', (X, Y, M))] from MNIST's float sets
    (X (N, 32, 32, 1), Y); M: the digit's pixels, uint8 0/1 (N, H, W, 1). validation: train on all
    but the last `validation_size` training images, test on those (the test set is not read)."""
    (X, Y), (Xt, Yt) = train, test
    if validation:
        X, Y, Xt, Yt = X[:-validation_size], Y[:-validation_size], X[-validation_size:], Y[-validation_size:]
    mask = lambda A: (A > 0).astype(np.uint8)
    sets = [(paint(X, colours(Y, rho, [SEEDS['train'], round(rho * 1e6)])), Y, mask(X))]
    for name, r in (('unbiased', UNBIASED), ('biased', rho)):
        sets.append((name, (paint(Xt, colours(Yt, r, [SEEDS[name], round(r * 1e6), validation])), Yt, mask(Xt))))
    return sets[0], sets[1:]
