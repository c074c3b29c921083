"""Biased-MNIST (mybiased.py) built from the real MNIST: the pixels where the digit is and is
not, each class's colour shares against rho, the unbiased test set, the masks, the validation
split, the seeded draws; bad names. Unit tier."""
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
