"""The raw files of the data sets: where they are looked for, their verified download, and the
cache of decoded arrays. Data-set independent: mydatasets.py says which files each data set needs.

Raw files are looked for, in this order, in the folders of $BIAL_DATA_PATH (a path list;
read-only is fine), in the cache ($BIAL_CACHE, default ~/.keras/datasets) and in
/usr/share/datasets; each folder may hold the file itself or a sub-folder named after the data
set (mnist/, fashion-mnist/, svhn/...). An archive may also be there already extracted. Only
what is missing is downloaded, into the cache, through a temporary file that is renamed once
complete and verified. Decoded arrays are kept in the cache (cache/derived/), keyed by the raw
files' paths, sizes and modification times, so that the second load is fast.
"""
import gzip
import hashlib
import os
import sys
import tarfile
import time
import zipfile

import numpy as np

from mycli import UserError
from myfiles import atomic, remove

DATA_PATH_VAR = 'BIAL_DATA_PATH'    # folders with raw files, separated by os.pathsep
CACHE_VAR = 'BIAL_CACHE'            # the one folder this module writes to
MIRROR_VAR = 'BIAL_MIRROR'          # base URL serving SUBDIR/FILE, instead of the official sites
SYSTEM_DIRS = ['/usr/share/datasets']   # where Debian's dataset-fashion-mnist installs
RETRIES = 3                         # attempts per download
BACKOFF = 1.0                       # seconds, times the attempt number, between attempts
TIMEOUT = 30                        # seconds without a byte before an attempt fails
DERIVED_VERSION = 2                 # bump when a decoder changes, to invalidate cached arrays


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
    with atomic(dest) as part:
        error = None
        for attempt in range(retries):
            if attempt:
                time.sleep(BACKOFF * attempt)
            have = os.path.getsize(part) if os.path.exists(part) else 0
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
                                 desc=os.path.basename(dest), leave=False, disable=None) as bar:
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
        os.chmod(part, 0o644)   # a cache is for everyone who reads it
    return dest


# ----------------------------------------------------------------------------------------------
# Decoded arrays, cached: uint8 images at their final size, int32 labels

def fingerprint(paths):
    """Changes when any of the files is renamed, resized or rewritten (or a decoder changes)."""
    h = hashlib.sha256(str(DERIVED_VERSION).encode())
    for p in paths:
        st = os.stat(p)
        h.update(f'{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
    return h.hexdigest()[:16]


ON_DISK = 1 << 30   # cached arrays larger than this are read from disk a few rows at a time (DiskArray)


def cached_arrays(key, paths, build):
    """The arrays `build()` decodes from the files `paths`, kept in cache/derived/KEY-FINGERPRINT/
    (one .npy file each) under a name that changes when one of the files does (the older version
    is deleted then). Arrays over ON_DISK bytes come back as DiskArrays, read from the cache as
    they are used: a large folder of photographs is not held in memory."""
    cached = os.path.join(cache_dir(), 'derived', f'{key}-{fingerprint(paths)}')
    if os.path.isdir(cached):
        try:
            return _load_arrays(cached)
        except Exception:   # a cache file cut short: rebuild it
            print(f'warning: {cached} is unreadable; decoding again', file=sys.stderr)
    arrays = build()
    try:
        folder = os.path.dirname(cached)
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):
            if old.startswith(key + '-'):
                remove(os.path.join(folder, old))
        with atomic(cached) as tmp:
            os.makedirs(tmp)
            for i, a in enumerate(arrays):
                np.save(os.path.join(tmp, f'a{i}.npy'), a)
        if any(a.nbytes > ON_DISK for a in arrays):
            return _load_arrays(cached)   # the large ones from disk, and the decoded copy freed
    except OSError as e:   # a read-only cache only costs speed
        print(f'warning: cannot write the array cache ({e})', file=sys.stderr)
    return arrays


def _load_arrays(folder):
    names = sorted((f for f in os.listdir(folder) if f.endswith('.npy')), key=lambda f: int(f[1:-4]))
    if not names:
        raise ValueError(f'{folder} holds no arrays')
    return [DiskArray(p) if os.path.getsize(p) > ON_DISK else np.load(p)
            for p in (os.path.join(folder, n) for n in names)]


class DiskArray:
    """The rows of a .npy file, read when they are asked for: X[i] and X[[i, j, ...]] give
    arrays, X[a:b] a DiskArray of those rows, np.asarray(X) all of them. For data sets larger
    than memory should hold; the operating system's file cache keeps the rows used often."""

    def __init__(self, path, start=0, stop=None):
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            self._offset = f.tell()
        if fortran:
            raise ValueError(f'{path}: a Fortran-ordered array')
        self.path, self.dtype, self._row_shape = path, np.dtype(dtype), tuple(shape[1:])
        self._row = int(np.prod(self._row_shape)) * self.dtype.itemsize
        if os.path.getsize(path) != self._offset + shape[0] * self._row:
            raise ValueError(f'{path} is cut short')
        self._start, self._stop = start, shape[0] if stop is None else stop
        self._fd = None

    @property
    def shape(self):
        return (self._stop - self._start,) + self._row_shape

    ndim = property(lambda self: len(self.shape))
    nbytes = property(lambda self: len(self) * self._row)

    def __len__(self):
        return self._stop - self._start

    def _read(self, rows):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((len(rows),) + self._row_shape, self.dtype)
        for k, r in enumerate(rows):
            out[k] = np.frombuffer(os.pread(self._fd, self._row, self._offset + (self._start + int(r)) * self._row),
                                   self.dtype).reshape(self._row_shape)
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step != 1:
                return self._read(range(a, b, step))
            return DiskArray(self.path, self._start + a, self._start + max(a, b))
        if np.ndim(key) == 0:
            return self._read([range(len(self))[int(key)]])[0]
        return self._read(np.arange(len(self))[np.asarray(key)])

    def __array__(self, dtype=None, copy=None):
        a = self._read(range(len(self)))
        return a if dtype is None else a.astype(dtype)

    def astype(self, dtype):
        return np.asarray(self).astype(dtype)


def derived(key, raws, build):
    """Arrays decoded from the raw files `raws` by `build(paths)`, cached (cached_arrays). The
    raw files are verified only when the arrays are built."""
    paths = [fetch(r, verified=False) for r in raws]

    def verified_build():
        good = paths
        for r, p in zip(raws, paths):
            try:
                verify(r, p)
            except DataError:
                good = [fetch(r) for r in raws]   # replaces a bad cache copy, or names the bad file
                break
        return build(good)
    return cached_arrays(key, paths, verified_build)
