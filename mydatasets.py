"""Every data set of the paper, by name, from a local copy or by download.

    (Xtr, Ytr), [(Xts1, Yts1), (Xts2, Yts2), ...] = mydatasets.load('mnist_backgrounds')

Images are float32 in [0, 1], NHWC; labels int32. Raw files are looked for, in this order, in
the folders of $BIAL_DATA_PATH (a path list; read-only is fine), in the cache ($BIAL_CACHE,
default ~/.keras/datasets) and in /usr/share/datasets; each folder may hold the file itself or a
sub-folder named after the data set (mnist/, fashion-mnist/, svhn/...). An archive may also be
there already extracted. Only what is missing is downloaded, into the cache, through a temporary
file that is renamed once complete and verified. Decoded arrays are kept in the cache
(cache/derived/) so that the second load is fast.

    python mydatasets.py NAME [--output montage.png]   # shapes, ranges, label counts, a montage
"""
import argparse
import gzip
import hashlib
import io
import os
import pickle
import sys
import tarfile
import tempfile
import time
import zipfile

import numpy as np

import mybackgrounds

DATA_PATH_VAR = 'BIAL_DATA_PATH'    # folders with raw files, separated by os.pathsep
CACHE_VAR = 'BIAL_CACHE'            # the one folder this module writes to
MIRROR_VAR = 'BIAL_MIRROR'          # base URL serving SUBDIR/FILE, instead of the official sites
SYSTEM_DIRS = ['/usr/share/datasets']   # where Debian's dataset-fashion-mnist installs
RETRIES = 3                         # attempts per download
BACKOFF = 1.0                       # seconds, times the attempt number, between attempts
TIMEOUT = 30                        # seconds without a byte before an attempt fails
DERIVED_VERSION = 1                 # bump when a decoder changes, to invalidate cached arrays


class UserError(Exception):
    """Bad input or a missing resource: the scripts print the message as one line and exit 1."""


class DataError(UserError):
    """A data set cannot be had; the message is one line meant for the user."""


def cache_dir():
    return os.path.expanduser(os.environ.get(CACHE_VAR) or os.path.join('~', '.keras', 'datasets'))


def search_dirs():
    env = [d for d in os.environ.get(DATA_PATH_VAR, '').split(os.pathsep) if d]
    return [os.path.expanduser(d) for d in env] + [cache_dir()] + SYSTEM_DIRS


# ----------------------------------------------------------------------------------------------
# Raw files: what each one is, where it comes from, how to tell a good one

class Raw:
    """One raw file of a data set. `members`: for an archive, the member names (or folder
    prefixes ending in '/') it must contain; the same names under a folder mean the archive
    is there extracted. `digest`: 'md5:HEX' or 'sha256:HEX' of the file as published, or
    'content-sha256:HEX' of its gunzipped content (the shared MNIST copies were re-compressed,
    so only the content can be compared)."""

    def __init__(self, subdir, name, url, digest=None, members=(), check=None, aliases=()):
        self.subdir, self.name, self.url, self.digest = subdir, name, url, digest
        self.members, self.check, self.aliases = list(members), check, list(aliases)

    def __repr__(self):
        return f'{self.subdir}/{self.name}'

    def download_url(self):
        mirror = os.environ.get(MIRROR_VAR)
        if mirror:
            return f'{mirror.rstrip("/")}/{self.subdir}/{self.name}'
        return self.url


def _digest_ok(path, digest):
    algo, _, want = digest.partition(':')
    h = hashlib.new(algo.replace('content-', ''))
    with open(path, 'rb') as f:
        magic = f.read(2)
        f.seek(0)
        if algo.startswith('content-') and magic == b'\x1f\x8b':
            f = gzip.GzipFile(fileobj=f)
        try:
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        except (OSError, EOFError):   # truncated or corrupt gzip stream
            return False
    return h.hexdigest() == want


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


def _check_mat(path):
    read_mat(path)


class Source:
    """Read access to a found raw file: an archive (zip, tar, tar.gz) or an extracted folder."""

    def __init__(self, path):
        self.path = path
        if os.path.isdir(path):
            self.kind = 'dir'
        elif zipfile.is_zipfile(path):
            self.kind, self.arc = 'zip', zipfile.ZipFile(path)
            self._names = [n for n in self.arc.namelist() if not n.endswith('/')]
        else:
            try:
                self.kind, self.arc = 'tar', tarfile.open(path)
                self._names = [m.name for m in self.arc.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError, EOFError) as e:
                raise DataError(f'{path} is neither a zip nor a tar archive ({e})')

    def names(self, prefix):
        if self.kind == 'dir':
            top = os.path.join(self.path, prefix)
            if not prefix.endswith('/'):
                return [prefix] if os.path.isfile(top) else []
            out = []
            for d, _, files in os.walk(top):
                rel = os.path.relpath(d, self.path).replace(os.sep, '/')
                out += [f'{rel}/{f}' for f in files]
            return sorted(out)
        return sorted(n for n in self._names if n == prefix or (prefix.endswith('/') and n.startswith(prefix)))

    def read(self, name):
        try:
            if self.kind == 'dir':
                with open(os.path.join(self.path, name), 'rb') as f:
                    return f.read()
            if self.kind == 'zip':
                return self.arc.read(name)
            return self.arc.extractfile(name).read()
        except (OSError, KeyError, EOFError, zipfile.BadZipFile, tarfile.TarError) as e:
            raise DataError(f'{self.path}: cannot read member {name} ({e})')

    def check(self, members):
        missing = [m for m in members if not self.names(m)]
        if missing:
            raise DataError(f'{self.path} lacks {", ".join(missing)}')


def _check_archive(members):
    return lambda path: Source(path).check(members)


def verify(raw, path):
    """Raise DataError naming `path` unless it is a good copy of `raw`."""
    if not os.path.isdir(path):
        if raw.digest and not _digest_ok(path, raw.digest):
            raise DataError(f'{path} does not match its published checksum ({raw.digest}); '
                            'it is corrupt or truncated')
        if raw.check:
            raw.check(path)
    if raw.members:
        Source(path).check(raw.members)


def locate(raw):
    """Candidate paths of `raw` on disk, in search order, and every place looked at."""
    found, looked = [], []
    for d in search_dirs():
        for name in [raw.name] + raw.aliases:
            for p in (os.path.join(d, raw.subdir, name), os.path.join(d, name)):
                looked.append(p)
                if os.path.isfile(p):
                    found.append(p)
        if raw.members:   # the archive already extracted here
            for root in (os.path.join(d, raw.subdir), d):
                if os.path.isdir(root) and all(Source(root).names(m) for m in raw.members):
                    found.append(root)
    return found, looked


def fetch(raw, verified=True):
    """Path of a good copy of `raw`, downloading it into the cache if no copy is found.
    A bad copy in the cache is deleted and fetched again; a bad copy elsewhere is an error."""
    found, looked = locate(raw)
    cache = os.path.abspath(cache_dir())
    for p in found:
        if not verified:
            return p
        try:
            verify(raw, p)
            return p
        except DataError as e:
            in_cache = os.path.abspath(p).startswith(cache + os.sep) and os.path.isfile(p)
            if not in_cache:
                raise
            print(f'warning: {e}; deleting it and downloading again', file=sys.stderr)
            os.remove(p)
    url = raw.download_url()
    expected = f'{raw.name} (data set folder {raw.subdir}/)'
    if not url:
        raise DataError(f'{expected} not found and it has no public download; put it in one of: '
                        f'{", ".join(looked)}')
    dest = os.path.join(cache_dir(), raw.subdir, raw.name)
    try:
        download(url, dest, lambda p: verify(raw, p))
    except DataError as e:
        raise DataError(f'{expected} not found in {", ".join(looked)}; download from {url} failed: {e}')
    return dest


# ----------------------------------------------------------------------------------------------
# Download: requests streaming, tqdm bar, retries with resume, atomic rename once verified

def download(url, dest, check=None, retries=None):
    """Download `url` to `dest`. The bytes go to a temporary file beside `dest`; an attempt cut
    short is resumed with an HTTP Range request where the server allows it; the file is checked
    with `check(path)` (raises DataError) and renamed to `dest` only then. On any failure the
    temporary file is removed: no partial or unverified file is ever left under its real name."""
    import requests
    import urllib3
    from tqdm import tqdm
    retries = RETRIES if retries is None else retries
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=os.path.basename(dest) + '.', suffix='.part',
                                dir=os.path.dirname(dest))
    os.close(fd)
    try:
        error = None
        for attempt in range(retries):
            if attempt:
                time.sleep(BACKOFF * attempt)
            have = os.path.getsize(part)
            # identity: the bytes as stored on the server, so that checksums and Range agree
            headers = {'Accept-Encoding': 'identity', **({'Range': f'bytes={have}-'} if have else {})}
            try:
                with requests.get(url, stream=True, timeout=TIMEOUT, headers=headers) as r:
                    if r.status_code == 416:   # nothing left to send: what we have is everything
                        break
                    r.raise_for_status()
                    if have and r.status_code != 206:   # the server ignored Range: start over
                        have = 0
                    size = r.headers.get('Content-Length')
                    total = have + int(size) if size else None
                    with open(part, 'ab' if have else 'wb') as f, \
                            tqdm(total=total, initial=have, unit='B', unit_scale=True,
                                 desc=os.path.basename(dest), leave=False,
                                 disable=None) as bar:
                        # read1 hands over every byte that arrived before a connection broke
                        # (iter_content drops its last partial chunk), so a resume loses nothing
                        while chunk := r.raw.read1(1 << 16, decode_content=False):
                            f.write(chunk)
                            bar.update(len(chunk))
                got = os.path.getsize(part)
                if total is not None and got != total:
                    raise IOError(f'transfer ended after {got} of {total} bytes')
                error = None
                break
            except requests.HTTPError as e:
                error = f'HTTP {e.response.status_code} {e.response.reason}'
                if e.response.status_code < 500 and e.response.status_code != 429:
                    break   # 404 and friends will not get better by asking again
            except (requests.RequestException, urllib3.exceptions.HTTPError, IOError) as e:
                error = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'.rstrip(': ')
        if error:
            raise DataError(f'{error} (after {attempt + 1} attempt{"s" if attempt else ""})')
        if check:
            try:
                check(part)
            except DataError as e:
                raise DataError(str(e).replace(part, 'the downloaded file'))
        os.chmod(part, 0o644)   # mkstemp made it private; a cache is for everyone who reads it
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.remove(part)
    return dest


# ----------------------------------------------------------------------------------------------
# Decoded arrays, cached: uint8 images at their final size, int32 labels

def _fingerprint(paths):
    h = hashlib.sha256(str(DERIVED_VERSION).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f'{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:16]


def _derived(key, raws, build):
    """Arrays decoded from `raws` by `build(paths)`, kept in cache/derived/ under a name that
    changes when a raw file does. The raw files are verified only when the arrays are built."""
    paths = [fetch(r, verified=False) for r in raws]
    cached = os.path.join(cache_dir(), 'derived', f'{key}-{_fingerprint(paths)}.npz')
    if os.path.isfile(cached):
        try:
            with np.load(cached) as z:
                return [z[f'a{i}'] for i in range(len(z.files))]
        except Exception:   # a cache file cut short: rebuild it
            print(f'warning: {cached} is unreadable; decoding again', file=sys.stderr)
    for r, p in zip(raws, paths):
        try:
            verify(r, p)
        except DataError:
            paths = [fetch(r) for r in raws]   # replaces a bad cache copy, or names the bad file
            break
    arrays = build(paths)
    try:
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        for old in os.listdir(os.path.dirname(cached)):
            if old.startswith(key + '-') and old.endswith('.npz'):
                os.remove(os.path.join(os.path.dirname(cached), old))
        fd, tmp = tempfile.mkstemp(suffix='.npz.part', dir=os.path.dirname(cached))
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, **{f'a{i}': a for i, a in enumerate(arrays)})
        os.replace(tmp, cached)
    except OSError as e:   # a read-only cache only costs speed
        print(f'warning: cannot write the array cache ({e})', file=sys.stderr)
    return arrays


def _float(X):
    return (X.astype(np.float32) / 255)[..., None] if X.ndim == 3 else X.astype(np.float32) / 255


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
                 check=_check_mat)
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
    return _as_sets(_derived(key, RAW[key], build))


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
    return _as_sets(_derived('cifar10', RAW['cifar10'], build))


def stl10():
    def build(paths):
        src = Source(paths[0])
        out = []
        for m in ('stl10_matlab/train.mat', 'stl10_matlab/test.mat'):
            X, y = read_mat(src.read(m), f'{paths[0]}:{m}')
            out += [_resize(X, 64), y - 1]   # labels 1..10 -> 0..9
        return out
    return _as_sets(_derived('stl10', RAW['stl10'], build))


def svhn():
    def build(paths):
        out = []
        for p in paths:
            X, y = read_mat(p)
            out += [X, y % 10]   # label 10 means the digit 0
        return out
    return _as_sets(_derived('svhn', RAW['svhn'], build))


def synthdigits():
    def build(paths):
        src = Source(paths[0])
        out = []
        for m in ('synth_train_32x32.mat', 'synth_test_32x32.mat'):
            X, y = read_mat(src.read(m), f'{paths[0]}:{m}')
            out += [X, y % 10]
        return out
    return _as_sets(_derived('synthdigits', RAW['synthdigits'], build))


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
    return _as_sets(_derived('gtsrb', RAW['gtsrb'], build))


def _text(src, member):
    return src.read(member).decode('utf-8', 'replace')


def _synsigns_all():
    def build(paths):
        src = Source(paths[0])
        rows = [r.split() for r in _text(src, 'synthetic_data/train_labelling.txt').splitlines() if r.strip()]
        names = ['synthetic_data/' + r[0] for r in rows]
        return [_decode_resized(src, names, 64), np.array([int(r[1]) for r in rows])]
    X, Y = _derived('synsigns', RAW['synsigns'], build)
    return _float(X), Y.astype(np.int32)


def synsigns():
    return _split(*_synsigns_all())   # 40x40 -> 64x64; seeded 75/25 split


def dogsvscatsredux():
    def build(paths):
        src = Source(paths[0])
        names = [n for n in src.names('train/') if n.lower().endswith(('.jpg', '.jpeg', '.png'))]
        Y = np.array([n.split('/')[-1].startswith('dog') for n in names])   # 1 = dog
        return [_decode_resized(src, names, 64), Y]
    X, Y = _derived('dogsvscatsredux', RAW['dogsvscatsredux'], build)
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
    return _as_sets(_derived('prates', RAW['prates'], build))


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
    Mtr, Mts = _derived('prates_masks', RAW['prates_masks'], build)
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
    rng = np.random.default_rng(seed)
    while True:
        b = photos[rng.integers(len(photos))]
        y, x = rng.integers(b.shape[0] - size + 1), rng.integers(b.shape[1] - size + 1)
        yield b[y:y + size, x:x + size]


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


def with_backgrounds(X, Y):
    """The clean test set, then the same images with each of the six backgrounds."""
    return [(X, Y)] + [(mybackgrounds.apply_background(X, f(X.shape[1])), Y)
                       for f in mybackgrounds.BACKGROUNDS.values()]


def with_noises(X, Y):
    return [(mybackgrounds.apply_background(X, mybackgrounds.salt_pepper(X.shape[1], r)), Y)
            for r in mybackgrounds.NOISE_RATES]


def mnist_backgrounds():
    tr, ts = mnist()
    return tr, with_backgrounds(*ts[0])


def fashionmnist_backgrounds():
    tr, ts = fashionmnist()
    return tr, with_backgrounds(*ts[0])


def mnist_noises():
    tr, ts = mnist()
    return tr, with_noises(*ts[0])


def fashionmnist_noises():
    tr, ts = fashionmnist()
    return tr, with_noises(*ts[0])


# ----------------------------------------------------------------------------------------------
# Registry: the names the scripts accept, with the names of their test sets

_BG = ['clean'] + list(mybackgrounds.BACKGROUNDS)
_NOISES = [f'salt_pepper_{r:.2f}' for r in mybackgrounds.NOISE_RATES]
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
}
NAMES = sorted(DATASETS)


def check_name(name):
    if name not in DATASETS:
        raise DataError(f'unknown data set {name!r}; valid names: {", ".join(NAMES)}')
    return name


def load(name):
    """(Xtr, Ytr), [(Xts, Yts), ...] of a data set by name; DataError if it cannot be had."""
    return DATASETS[check_name(name)][0]()


def subset(sets, n_train=None, n_test=None):
    """The first n_train training images and the first n_test of each test set (quick trials)."""
    (Xtr, Ytr), ts = sets
    cut = lambda X, Y, n: (X[:n], Y[:n]) if n else (X, Y)
    return cut(Xtr, Ytr, n_train), [cut(X, Y, n_test) for X, Y in ts]


# ----------------------------------------------------------------------------------------------
# Command lines (shared by every script): one-line errors, checked arguments

class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (`prog: error: ...`) and exit status 2."""

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


STRATEGIES = ['default', 'mirrored', 'multiworker']   # tf.distribute: one device, local GPUs, machines


def training_args(p, epochs, batchsize, eval_batchsize):
    """The options every training script shares (added after its own positional arguments)."""
    p.add_argument('--epochs', type=positive_int, default=epochs)
    p.add_argument('--batchsize', type=positive_int, default=batchsize, help='training batch size')
    p.add_argument('--eval-batchsize', type=positive_int, default=eval_batchsize, help='evaluation batch size')
    p.add_argument('--seed', type=int, help='seed for every random choice (reproducible runs)')
    p.add_argument('--resume', action='store_true', help='continue an interrupted run from its last checkpoint')
    p.add_argument('--subset', type=positive_int, help='use only the first N training images')
    p.add_argument('--test-subset', type=positive_int, help='use only the first N images of each test set')
    p.add_argument('--strategy', choices=STRATEGIES, default='default',
                   help='default: one device; mirrored: all local GPUs; multiworker: the machines in TF_CONFIG '
                   '(the batch size is the global one, split across replicas)')


def dataset_arg(name):
    try:
        return check_name(name)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e))


def whole_number(s, least=1):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{s!r} is not a whole number')
    if v < least:
        raise argparse.ArgumentTypeError(f'must be at least {least}, got {v}')
    return v


def positive_int(s):
    return whole_number(s, 1)


def non_negative_int(s):
    return whole_number(s, 0)


def fraction(s, ends=False):
    """A number strictly between 0 and 1 (ends=True: 0 and 1 allowed too)."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{s!r} is not a number')
    if not (0 <= v <= 1 if ends else 0 < v < 1):
        raise argparse.ArgumentTypeError(f'must be {"" if ends else "strictly "}between 0 and 1, got {v:g}')
    return v


def share(s):
    return fraction(s, ends=True)


def check_output_file(path, exts=('.keras', '.h5')):
    """A model file we may write: a known extension, in an existing, writable folder."""
    if os.path.splitext(path)[1] not in exts:
        raise UserError(f'output {path}: the file name must end in {" or ".join(exts)}')
    return check_writable_dir(os.path.dirname(os.path.abspath(path)), f'output {path}')


def check_writable_dir(d, what):
    if not os.path.isdir(d):
        raise UserError(f'{what}: folder {d} does not exist')
    if not os.access(d, os.W_OK | os.X_OK):
        raise UserError(f'{what}: folder {d} is not writable')
    return d


def check_picture_dir(d):
    """A folder for pictures: made if its parent exists and is writable."""
    if not os.path.isdir(d):
        check_writable_dir(os.path.dirname(os.path.abspath(d)) or '.', f'picture folder {d}')
    else:
        check_writable_dir(d, f'picture folder {d}')
    return d


def quiet_tensorflow():
    """Import TensorFlow with oneDNN on, and without its C++ start-up chatter (CUDA probing on a CPU-only machine),
    which is written straight to file descriptor 2 before its logging is set up, even with
    TF_CPP_MIN_LOG_LEVEL set from inside Python. Errors still raise as usual."""
    if 'tensorflow' in sys.modules:
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    # oneDNN's kernels are off by default on CPUs without AVX-512 (AMD ones among them); on
    # this project's 2-core AVX2 machine they make phase 3 about 35% faster (benchmark.py)
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf
        cpu_devices(tf)
        if 'TF_CONFIG' not in os.environ:   # several machines need TensorFlow not started yet
            tf.constant(0) + 1   # device start-up happens at the first operation
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels (True/False; None where this TensorFlow cannot
    say). quiet_tensorflow() turns them on, but only when it is what starts TensorFlow."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def is_cluster_chief():
    """Whether this task is the chief of the cluster in TF_CONFIG (several machines,
    tf.distribute multiworker), read without starting TensorFlow: the task of type 'chief', or
    worker 0 when the cluster names none. One-line error when TF_CONFIG is missing or unusable."""
    import json
    raw = os.environ.get('TF_CONFIG', '').strip()
    if not raw:
        raise UserError('--strategy multiworker needs TF_CONFIG with the cluster and this task '
                        '(see the README, "Several GPUs or machines")')
    try:
        config = json.loads(raw)
        kind, index, members = config['task']['type'], int(config['task']['index']), config['cluster']
        if len(members.get(kind, [])) <= index:
            raise ValueError(f'the cluster has no {kind} number {index}')
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        detail = f'missing {e}' if isinstance(e, KeyError) else str(e)
        raise UserError(f'TF_CONFIG is not a usable cluster description ({detail}); expected '
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}')
    return kind == 'chief' or (kind == 'worker' and index == 0 and 'chief' not in members)


def cpu_devices(tf):
    """BIAL_CPU_DEVICES=N splits the CPU into N logical devices, so that --strategy mirrored can
    be tried (and tested) on a machine without GPUs. Must run before TensorFlow's first operation."""
    n = os.environ.get('BIAL_CPU_DEVICES')
    if n:
        if not n.isdigit() or int(n) < 1:
            raise UserError(f'BIAL_CPU_DEVICES must be a whole number >= 1, not {n!r}')
        cpu = tf.config.list_physical_devices('CPU')[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))


def mute_native_stderr():
    """TensorFlow's C++ code writes log lines straight to file descriptor 2 (even harmless
    'errors', such as an optional graph rewrite that gave up) and does not see a
    TF_CPP_MIN_LOG_LEVEL set from inside Python. A script therefore points fd 2 at /dev/null and
    keeps Python's own stderr on a copy of the real one: its messages, warnings, tracebacks and
    progress bars still show. BIAL_TF_LOG=1 keeps TensorFlow's log (for debugging)."""
    if os.environ.get('BIAL_TF_LOG'):
        return
    sys.stderr.flush()
    real = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = os.fdopen(real, 'w', buffering=1)


INTERRUPT_HINT = None   # what to say on Ctrl-C (set by a training run: where its checkpoint is)


def run_main(main):
    """Run a script's main(): bad input and missing resources end in one line on stderr and
    exit 1; Ctrl-C in a one-line note and exit 130. No traceback for either."""
    mute_native_stderr()
    try:
        main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:   # disk full, permissions changed under us...
        print(f'error: {e.strerror or e}{": " + str(e.filename) if e.filename else ""}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        hint = f'; run the same command with --resume to continue from {INTERRUPT_HINT}' if INTERRUPT_HINT else ''
        print(f'\ninterrupted{hint}', file=sys.stderr)
        sys.exit(130)


# ----------------------------------------------------------------------------------------------
# Pictures (shared by every script that writes one): PNG only, no matplotlib, atomic

def write_text(path, text):
    """Write a text file atomically (temporary file in the same folder, then rename)."""
    fd, tmp = tempfile.mkstemp(suffix='.part', dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_png(path, img):
    """Write a float image in [0, 1] (H, W) or (H, W, 1|3) as an 8-bit PNG, atomically."""
    import imageio.v3 as iio
    img = np.clip(np.asarray(img, np.float32), 0, 1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(suffix='.png.part', dir=d)
    os.close(fd)
    try:
        iio.imwrite(tmp, np.round(img * 255).astype(np.uint8), extension='.png')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def montage(rows, gap=2, invert_gray=True):
    """A grid picture from rows of same-sized images (H, W, C): one row per list. Grayscale
    images are inverted (dark ink on white, as in the paper's figures)."""
    H, W, C = rows[0][0].shape
    n = max(len(r) for r in rows)
    canvas = np.ones((len(rows) * (H + gap) - gap, n * (W + gap) - gap, max(C, 1)), np.float32)
    for i, r in enumerate(rows):
        for j, x in enumerate(r):
            canvas[i * (H + gap):i * (H + gap) + H, j * (W + gap):j * (W + gap) + W] = \
                1 - x if (C == 1 and invert_gray) else x
    return canvas


def main():
    import argparse
    p = argparse.ArgumentParser(description='Load a data set by name: print each set\'s shape, dtype, '
                                'value range and label counts, and write a PNG montage of the first images.',
                                epilog=f'Data sets: {", ".join(NAMES)}. Local copies are searched in '
                                f'${DATA_PATH_VAR}, the cache (${CACHE_VAR}, default ~/.keras/datasets) '
                                f'and {", ".join(SYSTEM_DIRS)}.')
    p.add_argument('dataset', help='data set name (see below)')
    p.add_argument('--output', help='montage PNG to write (default: dataset-NAME.png)')
    p.add_argument('--n', type=int, default=10, help='images per set in the montage')
    args = p.parse_args()
    output = args.output or f'dataset-{args.dataset}.png'
    try:
        check_name(args.dataset)
        if args.dataset == 'prates_backgen':
            gen = prates_backgen(seed=0)
            sets, names = [(np.stack([next(gen) for _ in range(args.n)]), np.zeros(args.n, np.int32))], ['backgrounds']
        else:
            t0 = time.time()
            tr, ts = load(args.dataset)
            print(f'loaded {args.dataset} in {time.time() - t0:.1f}s')
            sets, names = [tr] + ts, ['train'] + DATASETS[args.dataset][1]
        for (X, Y), n in zip(sets, names):
            labels, counts = np.unique(Y, return_counts=True)
            print(f'{n:>18}: X {X.shape} {X.dtype} [{X.min():.3f}, {X.max():.3f}]  Y {Y.shape} {Y.dtype} '
                  f'counts {dict(zip(labels.tolist(), counts.tolist()))}')
        save_png(output, montage([list(X[:args.n]) for X, _ in sets]))
        print(f'wrote {output}: one row per set ({", ".join(names)})')
    except (DataError, OSError) as e:
        p.exit(1, f'error: {e}\n')


if __name__ == '__main__':
    main()
