"""Every data set of the paper by name, as arrays, from a local copy or a verified download.

    data = mydatasets.dataset('mnist_backgrounds')   # .train (X, Y), .tests [(name, (X, Y))]
    (Xtr, Ytr), tests = mydatasets.load('mnist')     # the published convention

Images are float32 in [0, 1], NHWC (load; a Data holds 8-bit ones as uint8, below); labels int32.
The raw files come from a local copy or a verified download (mydownload.py); decoded arrays are
cached. Beside the paper's 21 names:
the validation sets (mnist_validation, fashionmnist_validation), on which every choice of a
recipe is made without looking at the test set or its backgrounds, and the test backgrounds
pasted without the dark halo (mnist_nohalo, fashionmnist_nohalo).

    python mydatasets.py NAME [--output montage.png]   # shapes, ranges, label counts, a montage
"""
import gzip
import io
import os
import pickle
import time

import numpy as np

import mybackgrounds
import mybiased
import mycli
import myfolders
from mydownload import DataError, Raw, Source, derived, fetch

def _read_bytes(path):
    with open(path, 'rb') as f:
        data = f.read()
    if data[:2] == b'\x1f\x8b':
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f'{path} is not a valid gzip file ({e})')
    return data


def read_idx(path):
    """An IDX file (MNIST format), gzipped or not, as a uint8 array; checks magic and length."""
    data = _read_bytes(path)
    if len(data) < 8 or data[:2] != b'\0\0' or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise DataError(f'{path} is not an IDX file of unsigned bytes (bad magic number)')
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data[4:4 + 4 * ndim], '>u4'))
    if len(data) != 4 + 4 * ndim + int(np.prod(dims)):
        raise DataError(f'{path} is truncated or padded: header says {dims}, '
                        f'{len(data) - 4 - 4 * ndim} bytes of data')
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def check_idx(shape_tail):
    def check(path):
        a = read_idx(path)
        if a.shape[1:] != shape_tail:
            raise DataError(f'{path}: IDX items of shape {a.shape[1:]}, expected {shape_tail}')
    return check


def read_mat(path_or_bytes, label=''):
    """SVHN-style .mat: X (H, W, C, N) uint8, y (N, 1). Returns X as NHWC, y flat."""
    from scipy.io import loadmat
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    name = label or path_or_bytes
    try:
        d = loadmat(src, variable_names=['X', 'y'])
    except Exception as e:  # scipy raises several types for a bad file
        raise DataError(f'{name} is not a readable .mat file ({type(e).__name__}: {e})')
    if 'X' not in d or 'y' not in d:
        raise DataError(f'{name}: .mat file without the keys X and y')
    X, y = d['X'], d['y'].reshape(-1)
    if X.ndim == 4:                       # SVHN, SynthDigits: (H, W, C, N)
        X = np.moveaxis(X, -1, 0)
    elif X.ndim == 2 and X.shape[1] == 96 * 96 * 3:   # STL-10 matlab: (N, 96*96*3), column-major
        X = X.reshape((-1, 96, 96, 3), order='F')
    else:
        raise DataError(f'{name}: X has shape {X.shape}, not images')
    if len(X) != len(y):
        raise DataError(f'{name}: {len(X)} images but {len(y)} labels')
    return X, y


def _float(X):
    return (X.astype(np.float32) / 255)[..., None] if X.ndim == 3 else X.astype(np.float32) / 255


LEVELS = np.arange(256, dtype=np.float32) / 255   # the float32 value of each 8-bit level (what _float gives)


def compact(X, chunk=4096):
    """X as uint8 when that loses nothing (every pixel a level k/255 that LEVELS gives back exactly:
    images that were 8-bit, such as every built-in data set and the paper's backgrounds pasted
    behind them): a quarter of the memory, the same float32 images for the model
    (mydatagen.to_float converts a batch at a time). Otherwise X itself. Checked a chunk at a time,
    so that no second float32 copy of a large set is made."""
    if X.dtype != np.float32 or not X.size:
        return X
    U = np.empty(X.shape, np.uint8)
    for i in range(0, len(X), chunk):
        x = X[i:i + chunk]
        u = np.rint(x * 255)
        if not (u.min() >= 0 and u.max() <= 255):   # (NaN fails too)
            return X
        U[i:i + chunk] = u
        if not np.array_equal(LEVELS[U[i:i + chunk]], x):
            return X
    return U


def _resize(X, size, chunk=512):
    """skimage.transform.resize (bilinear, anti-aliased when shrinking) of uint8 images of one
    size, a chunk at a time (resizing the batch axis by a factor 1 leaves it untouched), back to
    uint8: the cache keeps 8-bit images."""
    from skimage.transform import resize
    if X.shape[1:3] == (size, size):
        return X
    out = np.empty((len(X), size, size) + X.shape[3:], np.uint8)
    for i in range(0, len(X), chunk):
        x = X[i:i + chunk]
        out[i:i + chunk] = np.round(resize(x, (len(x), size, size) + x.shape[3:]) * 255)
    return out


def _decode_image(data, name):
    import imageio.v3 as iio
    try:
        x = iio.imread(io.BytesIO(data))
    except Exception as e:
        raise DataError(f'cannot decode image {name} ({e})')
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, -1)
    return x[..., :3]


def _decode_resized(src, names, size):
    from skimage.transform import resize
    out = np.empty((len(names), size, size, 3), np.uint8)
    for i, n in enumerate(names):
        x = _decode_image(src.read(n), f'{src.path}:{n}')
        out[i] = x if x.shape[:2] == (size, size) else np.round(resize(x, (size, size)) * 255)
    return out


def _split(X, Y, seed=0, share=0.75):
    # FIX: the published code built a RandomState(seed) and then used the global generator
    ix = np.random.RandomState(seed).permutation(len(X))
    i = int(len(X) * share)
    return (X[ix[:i]], Y[ix[:i]]), [(X[ix[i:]], Y[ix[i:]])]


def _as_sets(arrays):
    """[x0, y0, x1, y1, ...] (uint8, int) -> (train, [tests]) as float32/int32."""
    sets = [(_float(arrays[i]), arrays[i + 1].astype(np.int32)) for i in range(0, len(arrays), 2)]
    return sets[0], sets[1:]


# ----------------------------------------------------------------------------------------------
# The data sets

MNIST_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
FASHION_URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
IDX_NAMES = ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
             't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']
IDX_SHA256 = {  # of the decompressed files (shared/datasets/README.md)
    'mnist': ['ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
              '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
              '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
              'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2'],
    'fashion-mnist': ['c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
                      'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
                      '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
                      '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34'],
}


def _idx_raws(subdir, url):
    return [Raw(subdir, n + '.gz', url + n + '.gz', f'content-sha256:{sha}', aliases=[n],
                check=check_idx((28, 28) if 'images' in n else ()))
            for n, sha in zip(IDX_NAMES, IDX_SHA256[subdir])]


CIFAR_MEMBERS = [f'cifar-10-batches-py/data_batch_{i}' for i in range(1, 6)] + ['cifar-10-batches-py/test_batch']
GTSRB_URL = 'https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/'
PRATES_CLASSES = ['IPL', 'IPN', 'IPV', 'ISB']

RAW = {
    'mnist': _idx_raws('mnist', MNIST_URL),
    'fashionmnist': _idx_raws('fashion-mnist', FASHION_URL),
    'cifar10': [Raw('cifar10', 'cifar-10-python.tar.gz', 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz',
                    'md5:c58f30108f718f92721af3b95e74349a', CIFAR_MEMBERS)],
    'stl10': [Raw('stl10', 'stl10_matlab.tar.gz', 'http://ai.stanford.edu/~acoates/stl10/stl10_matlab.tar.gz',
                  None, ['stl10_matlab/train.mat', 'stl10_matlab/test.mat'])],
    'svhn': [Raw('svhn', f'{s}_32x32.mat', f'http://ufldl.stanford.edu/housenumbers/{s}_32x32.mat', f'md5:{md5}',
                 check=read_mat)
             for s, md5 in [('train', 'e26dedcc434d2e4c54c9b2d4a06d8373'), ('test', 'eb5a983be6a315427106f1b164d9cef3')]],
    # Ganin's SynthDigits: a Google Drive file, which may refuse scripted downloads (then drop it in by hand)
    'synthdigits': [Raw('synthdigits', 'SynthDigits.zip',
                        'https://drive.google.com/uc?export=download&id=0B9Z4d7lAwbnTSVR1dEFSRUFxOUU',
                        None, ['synth_train_32x32.mat', 'synth_test_32x32.mat'])],
    'gtsrb': [Raw('gtsrb', 'GTSRB-Training_fixed.zip', GTSRB_URL + 'GTSRB-Training_fixed.zip',
                  'md5:513f3c79a4c5141765e10e952eaa2478', ['GTSRB/Training/']),
              Raw('gtsrb', 'GTSRB_Final_Test_Images.zip', GTSRB_URL + 'GTSRB_Final_Test_Images.zip',
                  'md5:c7e4e6327067d32654124b0fe9e82185', ['GTSRB/Final_Test/Images/']),
              Raw('gtsrb', 'GTSRB_Final_Test_GT.zip', GTSRB_URL + 'GTSRB_Final_Test_GT.zip',
                  'md5:fe31e9c9270bbcd7b84b7f21a9d9d9e5', ['GT-final_test.csv'])],
    'synsigns': [Raw('synsigns', 'synthetic_data.zip', 'https://www.dropbox.com/s/7izi9lccg163on1/synthetic_data.zip?dl=1',
                     None, ['synthetic_data/train_labelling.txt'])],
    # Kaggle needs a login: no scripted download; put the competition's train.zip in place
    'dogsvscatsredux': [Raw('dogsvscatsredux', 'train.zip', None, None, ['train/'])],
    'prates': [Raw('prates', 'prates.zip', 'https://www.dropbox.com/sh/u5fmpv68dba1nxz/AAAwbHfmXQPUOtYQARut0fnJa?dl=1',
                   None, [f'components/data_{c}_{t}/' for c in PRATES_CLASSES for t in (1, 2, 3, 4)])],
}
RAW['prates_masks'] = [Raw('prates', 'prates.zip', RAW['prates'][0].url, None,
                           [f'components/mask_{c}_{t}/' for c in PRATES_CLASSES for t in (1, 3)])]
RAW['prates_backgen'] = [Raw('prates', 'prates.zip', RAW['prates'][0].url, None, ['bg/'])]


def _mnist_like(key):
    def build(paths):
        X = [read_idx(p) for p in paths]
        X = [np.pad(x, ((0, 0), (2, 2), (2, 2))) if x.ndim == 3 else x for x in X]   # 28x28 -> 32x32
        if len(X[0]) != len(X[1]) or len(X[2]) != len(X[3]):
            raise DataError(f'{key}: image and label files disagree in count')
        return X
    return _as_sets(derived(key, RAW[key], build))


def mnist():
    return _mnist_like('mnist')


def fashionmnist():
    return _mnist_like('fashionmnist')


def cifar10():
    def build(paths):
        src = Source(paths[0])
        X, Y = [], []
        for m in CIFAR_MEMBERS:
            d = pickle.loads(src.read(m), encoding='bytes')
            X.append(d[b'data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            Y.append(np.asarray(d[b'labels']))
        Xtr, Ytr = np.concatenate(X[:5]), np.concatenate(Y[:5])
        return [_resize(Xtr, 64), Ytr, _resize(X[5], 64), Y[5]]
    return _as_sets(derived('cifar10', RAW['cifar10'], build))


def stl10():
    def build(paths):
        src = Source(paths[0])
        out = []
        for m in ('stl10_matlab/train.mat', 'stl10_matlab/test.mat'):
            X, y = read_mat(src.read(m), f'{paths[0]}:{m}')
            out += [_resize(X, 64), y - 1]   # labels 1..10 -> 0..9
        return out
    return _as_sets(derived('stl10', RAW['stl10'], build))


def svhn():
    def build(paths):
        out = []
        for p in paths:
            X, y = read_mat(p)
            out += [X, y % 10]   # label 10 means the digit 0
        return out
    return _as_sets(derived('svhn', RAW['svhn'], build))


def synthdigits():
    def build(paths):
        src = Source(paths[0])
        out = []
        for m in ('synth_train_32x32.mat', 'synth_test_32x32.mat'):
            X, y = read_mat(src.read(m), f'{paths[0]}:{m}')
            out += [X, y % 10]
        return out
    return _as_sets(derived('synthdigits', RAW['synthdigits'], build))


def gtsrb():
    def build(paths):
        train, test, gt = (Source(p) for p in paths)
        names = [n for n in train.names('GTSRB/Training/') if n.endswith('.ppm')]
        Ytr = np.array([int(n.split('/')[-2]) for n in names])   # folder 000NN = class NN
        rows = [r.split(';') for r in _text(gt, 'GT-final_test.csv').splitlines()[1:] if r.strip()]
        label = {r[0]: int(r[-1]) for r in rows}
        tnames = [n for n in test.names('GTSRB/Final_Test/Images/') if n.endswith('.ppm')]
        missing = [n for n in tnames if n.split('/')[-1] not in label]
        if missing:
            raise DataError(f'{paths[2]}: GT-final_test.csv has no label for {missing[0]}')
        Yts = np.array([label[n.split('/')[-1]] for n in tnames])
        return [_decode_resized(train, names, 64), Ytr, _decode_resized(test, tnames, 64), Yts]
    return _as_sets(derived('gtsrb', RAW['gtsrb'], build))


def _text(src, member):
    return src.read(member).decode('utf-8', 'replace')


def _synsigns_all():
    def build(paths):
        src = Source(paths[0])
        rows = [r.split() for r in _text(src, 'synthetic_data/train_labelling.txt').splitlines() if r.strip()]
        names = ['synthetic_data/' + r[0] for r in rows]
        return [_decode_resized(src, names, 64), np.array([int(r[1]) for r in rows])]
    X, Y = derived('synsigns', RAW['synsigns'], build)
    return _float(X), Y.astype(np.int32)


def synsigns():
    return _split(*_synsigns_all())   # 40x40 -> 64x64; seeded 75/25 split


def dogsvscatsredux():
    def build(paths):
        src = Source(paths[0])
        names = [n for n in src.names('train/') if n.lower().endswith(('.jpg', '.jpeg', '.png'))]
        Y = np.array([n.split('/')[-1].startswith('dog') for n in names])   # 1 = dog
        return [_decode_resized(src, names, 64), Y]
    X, Y = derived('dogsvscatsredux', RAW['dogsvscatsredux'], build)
    return _split(_float(X), Y.astype(np.int32))


def _prates_images(src, folder, size=224):
    names = [n for n in src.names(f'components/{folder}/')
             if n.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff'))]
    return names, _decode_resized(src, names, size)


def prates():
    """Insulators (Prates et al.): 224x224 RGB lab photos for training (type 1), field photos
    for testing (type 3, then types 2 and 4); classes IPL, IPN, IPV, ISB."""
    def build(paths):
        src = Source(paths[0])
        out = []
        for types in ([1], [3], [2, 4]):
            X, Y = [], []
            for t in types:
                for y, c in enumerate(PRATES_CLASSES):
                    x = _prates_images(src, f'data_{c}_{t}')[1]
                    X.append(x)
                    Y.append(np.full(len(x), y))
            out += [np.concatenate(X), np.concatenate(Y)]
        return out
    return _as_sets(derived('prates', RAW['prates'], build))


def prates_masks():
    """Manual masks of the insulator photos of types 1 and 3, aligned with prates()'s training
    set and first test set: (Mtr, [Mts1]), float32 (N, 224, 224, 1) in {0, 1}. They are read
    from components/mask_{CLASS}_{TYPE}/, one mask per photo under the photo's file name.
    FIX: the published loader read the photos instead of the masks."""
    def build(paths):
        src = Source(paths[0])
        out = []
        for t in (1, 3):
            M = []
            for c in PRATES_CLASSES:
                images = [n.split('/')[-1] for n in _prates_images(src, f'data_{c}_{t}')[0]]
                masks, m = _prates_images(src, f'mask_{c}_{t}')
                if [n.split('/')[-1] for n in masks] != images:
                    raise DataError(f'{paths[0]}: components/mask_{c}_{t}/ does not hold one mask '
                                    f'per photo of components/data_{c}_{t}/')
                M.append(m.max(-1) > 127)
            out.append(np.concatenate(M).astype(np.uint8) * 255)
        return out
    Mtr, Mts = derived('prates_masks', RAW['prates_masks'], build)
    return _float(Mtr), [_float(Mts)]


def prates_backgen(seed=None, size=224):
    """Endless random size x size crops of the background photos in bg/ (for phase 3's 'real'
    backgrounds), float32 in [0, 1]. FIX: the published version did not run (wrong folder)."""
    src = Source(fetch(RAW['prates_backgen'][0]))
    names = [n for n in src.names('bg/') if n.lower().endswith(('.png', '.jpg', '.jpeg', '.bmp'))]
    photos = [_decode_image(src.read(n), n).astype(np.float32) / 255 for n in names]
    photos = [p for p in photos if p.shape[0] >= size and p.shape[1] >= size]
    if not photos:
        raise DataError(f'{src.path}: no background photo of at least {size}x{size} in bg/')
    return myfolders.crops(photos, size, seed)


# Pairs: train on the first, test on the first's test set and then on the second's.
# CIFAR-10 and STL-10 share 9 classes: frog (CIFAR-10) and monkey (STL-10) are dropped and both
# are put in the CIFAR-10 order: airplane, automobile/car, bird, cat, deer, dog, horse, ship, truck.
CIFAR_TO_COMMON = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 7: 6, 8: 7, 9: 8}         # frog (6) dropped
STL_TO_COMMON = {0: 0, 2: 1, 1: 2, 3: 3, 4: 4, 5: 5, 6: 6, 8: 7, 9: 8}           # monkey (7) dropped


def _remap(X, Y, mapping):
    keep = np.isin(Y, list(mapping))
    lut = np.full(max(mapping) + 1, -1, np.int32)
    for k, v in mapping.items():
        lut[k] = v
    return X[keep], lut[Y[keep]]


def cifar10_stl10():
    (Xtr, Ytr), [ts1] = cifar10()
    _, [ts2] = stl10()
    return _remap(Xtr, Ytr, CIFAR_TO_COMMON), [_remap(*ts1, CIFAR_TO_COMMON), _remap(*ts2, STL_TO_COMMON)]


def stl10_cifar10():
    (Xtr, Ytr), [ts1] = stl10()
    _, [ts2] = cifar10()
    return _remap(Xtr, Ytr, STL_TO_COMMON), [_remap(*ts1, STL_TO_COMMON), _remap(*ts2, CIFAR_TO_COMMON)]


def gtsrb_synsigns():
    tr, ts = gtsrb()
    return tr, ts + [_synsigns_all()]   # all of SynSigns as the second test set


def svhn_synthdigits():
    tr, ts = svhn()
    return tr, ts + synthdigits()[1]


def synthdigits_svhn():
    tr, ts = synthdigits()
    return tr, ts + svhn()[1]


def with_backgrounds(X, Y, patterns=None, halo=mybackgrounds.HALO):
    """The clean test set, then the same images with each background of `patterns` (default:
    the paper's six), pasted outside the ink dilated by `halo` (0: no dark rim)."""
    patterns = patterns or mybackgrounds.BACKGROUNDS
    backs = [f(X.shape[1]) for f in patterns.values()]
    return [(X, Y)] + [(B, Y) for B in mybackgrounds.apply_backgrounds(X, backs, halo)]


def with_noises(X, Y):
    backs = [mybackgrounds.salt_pepper(X.shape[1], r) for r in mybackgrounds.NOISE_RATES]
    return [(B, Y) for B in mybackgrounds.apply_backgrounds(X, backs)]


def _tests_made(base, make):
    """A loader: base()'s training set, and its test set made into several by make(X, Y)."""
    def load():
        tr, ts = base()
        return tr, make(*ts[0])
    return load


mnist_backgrounds = _tests_made(mnist, with_backgrounds)
fashionmnist_backgrounds = _tests_made(fashionmnist, with_backgrounds)
mnist_nohalo = _tests_made(mnist, lambda X, Y: with_backgrounds(X, Y, halo=0))
fashionmnist_nohalo = _tests_made(fashionmnist, lambda X, Y: with_backgrounds(X, Y, halo=0))
mnist_noises = _tests_made(mnist, with_noises)
fashionmnist_noises = _tests_made(fashionmnist, with_noises)


VALIDATION_SIZE = 5000   # the last images of the training set, held out


def validation(train):
    """Train on all but the last VALIDATION_SIZE training images; test on those, clean, then
    with each validation background pasted without a rim, then with the paper's rim (halo 2).
    Neither the test set nor the test backgrounds take any part."""
    X, Y = train
    Xv, Yv = X[-VALIDATION_SIZE:], Y[-VALIDATION_SIZE:]
    rimless = with_backgrounds(Xv, Yv, mybackgrounds.VALIDATION, halo=0)
    return (X[:-VALIDATION_SIZE], Y[:-VALIDATION_SIZE]), rimless + with_backgrounds(Xv, Yv, mybackgrounds.VALIDATION)[1:]


def mnist_validation():
    return validation(mnist()[0])


def fashionmnist_validation():
    return validation(fashionmnist()[0])


# ----------------------------------------------------------------------------------------------
# Registry: the names the scripts accept, with the names of their test sets

_BG = ['clean'] + list(mybackgrounds.BACKGROUNDS)
_NOISES = [f'salt_pepper_{r:.2f}' for r in mybackgrounds.NOISE_RATES]
_VAL = ['clean'] + list(mybackgrounds.VALIDATION) + [f'{n}_rim' for n in mybackgrounds.VALIDATION]
DATASETS = {  # name: (loader, names of its test sets)
    'mnist': (mnist, ['test']), 'fashionmnist': (fashionmnist, ['test']),
    'cifar10': (cifar10, ['test']), 'stl10': (stl10, ['test']), 'svhn': (svhn, ['test']),
    'synthdigits': (synthdigits, ['test']), 'gtsrb': (gtsrb, ['test']), 'synsigns': (synsigns, ['test']),
    'dogsvscatsredux': (dogsvscatsredux, ['test']),
    'prates': (prates, ['field_type3', 'field_types2and4']),
    'prates_masks': (prates_masks, ['masks_type3']),
    'cifar10_stl10': (cifar10_stl10, ['cifar10', 'stl10']),
    'stl10_cifar10': (stl10_cifar10, ['stl10', 'cifar10']),
    'gtsrb_synsigns': (gtsrb_synsigns, ['gtsrb', 'synsigns']),
    'svhn_synthdigits': (svhn_synthdigits, ['svhn', 'synthdigits']),
    'synthdigits_svhn': (synthdigits_svhn, ['synthdigits', 'svhn']),
    'mnist_backgrounds': (mnist_backgrounds, _BG), 'fashionmnist_backgrounds': (fashionmnist_backgrounds, _BG),
    'mnist_noises': (mnist_noises, _NOISES), 'fashionmnist_noises': (fashionmnist_noises, _NOISES),
    'prates_backgen': (prates_backgen, []),   # a generator of backgrounds, not a (train, tests) pair
    # added here: no dark rim around the object; the validation sets of every choice
    'mnist_nohalo': (mnist_nohalo, _BG), 'fashionmnist_nohalo': (fashionmnist_nohalo, _BG),
    'mnist_validation': (mnist_validation, _VAL), 'fashionmnist_validation': (fashionmnist_validation, _VAL),
}
NAMES = sorted(DATASETS)
EPILOG = (f'Data sets: {", ".join(NAMES)}, {mybiased.NAMES}; or a folder of your own images: DIR/train/<class>/*.png, '
          'DIR/test/<class>/... (and DIR/test-<name>/<class>/..., DIR/masks/<split>/<class>/*.png).')


def check_name(name):
    """A data set's name, or a folder holding a data set of one's own (myfolders.py)."""
    if name not in DATASETS and not mybiased.parse(name) and not myfolders.is_folder(name):
        hint = f'; {name} has no train/ folder' if os.path.isdir(name) else ''
        raise DataError(f'unknown data set {name!r}{hint}; valid names: {", ".join(NAMES)}, {mybiased.NAMES}, or a folder '
                        'DIR with DIR/train/<class>/ and DIR/test/<class>/')
    return name


def load(name):
    """(Xtr, Ytr), [(Xts, Yts), ...] of a data set by name; DataError if it cannot be had."""
    return DATASETS[check_name(name)][0]()


class Data:
    """A data set as the scripts use it: its training set (X, Y), its named test sets
    [(name, (X, Y)), ...], its number of classes, their names (folder data sets; else None),
    and, where the data set has them, the masks of its sets ({set name: M}). Images are uint8
    where they were 8-bit (compact: every built-in data set, the paper's backgrounds, Biased-MNIST,
    folder data sets), else float32 in [0, 1]; the models get float32 either way, converted a
    batch at a time (mydatagen.to_float): a quarter of the memory for the same numbers."""

    def __init__(self, name, train, tests, class_names=None, masks=None):
        train, tests = (compact(train[0]), train[1]), [(n, (compact(X), Y)) for n, (X, Y) in tests]
        self.name, self.train, self.tests, self.class_names, self.masks = name, train, tests, class_names, masks
        self.shape = train[0].shape[1:]
        self.classes = len(class_names) if class_names else \
            int(max([train[1].max()] + [Y.max() for _, (_, Y) in tests if len(Y)])) + 1

    @property
    def sets(self):
        """The training set and every test set, named: what each epoch's report evaluates."""
        return [('train', self.train)] + self.tests


def with_nohalo(data):
    """`data` with six more test sets: its first test set (the clean one) with each of the
    paper's backgrounds pasted without the dark rim (halo 0), named BACKGROUND_nohalo."""
    name, (X, Y) = data.tests[0]
    if X.shape[-1] != 1:
        raise DataError(f'the test backgrounds are pasted behind grayscale images; {data.name} has '
                        f'{X.shape[-1]} channels')
    extra = with_backgrounds(X, Y, halo=0)[1:]
    return Data(data.name, data.train, data.tests + [(f'{n}_nohalo', s) for n, s in
                                                      zip(mybackgrounds.BACKGROUNDS, extra)])


def dataset(name, n_train=None, n_test=None, size=None, masks=False):
    """The data set `name` (or a folder, myfolders.py: its images resized to size x size if
    given, and its masks if asked for) as a Data, optionally only its first n_train training
    images and the first n_test of each test set (quick trials)."""
    # the first n as a copy: a view would keep the whole array in memory (60,000 training images
    # for the one that reproduce.py's evaluation asks for)
    cut = lambda a, n: a[:n].copy() if n and a is not None and n < len(a) else a
    if name not in DATASETS and myfolders.is_folder(name):
        classes, splits = myfolders.load(name, size, masks)
        (Xtr, Ytr, Mtr), tests = splits['train'], [(s.replace('test-', '', 1), v) for s, v in splits.items() if s != 'train']
        return Data(name, (cut(Xtr, n_train), cut(Ytr, n_train)),
                    [(s, (cut(X, n_test), cut(Y, n_test))) for s, (X, Y, _) in tests], classes,
                    {'train': cut(Mtr, n_train), **{s: cut(M, n_test) for s, (_, _, M) in tests}} if masks else None)
    if size is not None:
        raise DataError(f'--size resizes the images of a folder data set; {name} has its own size')
    if mybiased.parse(name):   # Biased-MNIST (mybiased.py): it knows its masks, the digits' pixels
        train, tests = mnist()
        (X, Y, M), tests = mybiased.build(train, tests[0], *mybiased.parse(name), VALIDATION_SIZE)
        data = Data(name, (cut(X, n_train), cut(Y, n_train)), [(n, (cut(a, n_test), cut(b, n_test))) for n, (a, b, _) in tests])
        data.masks = {'train': cut(M, n_train), **{n: cut(m, n_test) for n, (_, _, m) in tests}} if masks else None
        return data
    if masks:
        raise DataError(f'{name} has no masks of its own (Biased-MNIST has, and a folder data set with DIR/masks/)')
    (Xtr, Ytr), ts = load(name)
    return Data(name, (cut(Xtr, n_train), cut(Ytr, n_train)),
                [(n, (cut(X, n_test), cut(Y, n_test))) for n, (X, Y) in zip(DATASETS[name][1], ts)])


def main():
    from myfiles import montage, save_png
    p = mycli.ArgumentParser(__doc__, epilog=EPILOG + ' Local copies are searched in $BIAL_DATA_PATH, the cache '
                             '($BIAL_CACHE, default ~/.keras/datasets) and /usr/share/datasets.')
    p.add_argument('dataset', type=mycli.checked(check_name), help='data set name (see below)')
    p.add_argument('--output', help='montage PNG to write (default: dataset-NAME.png)')
    p.add_argument('--n', type=mycli.positive_int, default=10, help='images per set in the montage')
    mycli.size_arg(p)
    p.add_argument('--export', metavar='DIR', help='write the data set as a folder data set DIR (DIR/train/<class>/, '
                   'DIR/test/<class>/, DIR/test-<name>/<class>/) instead of a montage')
    p.add_argument('--masks', action='store_true', help='with --export: also DIR/masks/, the images\' X > 0')
    p.add_argument('--subset', type=mycli.positive_int, help='with --export: only the first N training images')
    p.add_argument('--test-subset', type=mycli.positive_int, help='with --export: only the first N of each test set')
    args = p.parse_args()
    if args.export:
        if os.path.exists(args.export):
            raise mycli.UserError(f'--export {args.export}: it exists already; name a new folder')
        mycli.output_dir(args.export, what='--export')
        myfolders.export(dataset(args.dataset, args.subset, args.test_subset, args.size), args.export, args.masks)
        print(f'wrote {args.export}: train/, ' + ', '.join(sorted(d for d in os.listdir(args.export) if d != 'train')))
        return
    output = mycli.output_file(args.output, f'dataset-{os.path.basename(os.path.abspath(args.dataset))}.png', ('.png',))
    if args.dataset == 'prates_backgen':
        gen = prates_backgen(seed=0)
        sets = [('backgrounds', (np.stack([next(gen) for _ in range(args.n)]), np.zeros(args.n, np.int32)))]
    else:
        t0 = time.time()
        sets = dataset(args.dataset, size=args.size).sets
        print(f'loaded {args.dataset} in {time.time() - t0:.1f}s')
    for n, (X, Y) in sets:
        labels, counts = np.unique(Y, return_counts=True)
        print(f'{n:>18}: X {X.shape} {X.dtype} [{X.min():.3f}, {X.max():.3f}]  Y {Y.shape} {Y.dtype} '
              f'counts {dict(zip(labels.tolist(), counts.tolist()))}')
    save_png(output, montage([list(X[:args.n]) for _, (X, _) in sets]))
    print(f'wrote {output}: one row per set ({", ".join(n for n, _ in sets)})')


if __name__ == '__main__':
    mycli.run_main(main)
