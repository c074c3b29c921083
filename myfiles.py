"""Files written whole or not at all: atomic writes, text, PNG pictures.

    with myfiles.atomic('model.keras') as tmp:   # write tmp; renamed to model.keras only if
        model.save(tmp)                          # the block ends without an exception

Every file this project writes (models, checkpoints, logs, tables, pictures, downloads, cached
arrays) goes through atomic(): a crash, a kill or a full disk never leaves a half-written file
under its real name. For the crash tests, BIAL_FAULT=POINT[@EPOCH] kills the process at a chosen
moment of a write (fault()).
"""
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import tempfile
import time

import numpy as np

PART = '.part'   # in the name of every temporary file: what a later run may delete
STALE = 24 * 3600   # a temporary file of another machine's is taken for abandoned after this long


HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]   # this machine, in temporary names


def _writer():
    """Who writes a temporary file: this machine and this process (read at each write: a forked
    process is another writer)."""
    return f'{HOST}-{os.getpid()}'


@contextlib.contextmanager
def atomic(path):
    """Yield a temporary name in `path`'s folder (no file there yet: the caller creates it,
    a file or a folder); rename it to `path` when the block ends normally, remove it otherwise.
    The name ends in `path`'s extension (writers that pick the format by extension need it),
    and names its writer, so that two processes writing the same path at once (two runs decoding
    the same data set into the cache) do not take each other's file for a leftover."""
    remove_leftovers(path)   # of an earlier write of this path that a kill interrupted
    d, base = os.path.split(os.path.abspath(path))
    ext = os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f'.{base}.{_writer()}.', suffix=PART + ext, dir=d)
    os.close(fd)
    os.remove(tmp)   # some writers (Keras) refuse an existing target; they only need the name
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        remove(tmp)


def _abandoned(folder, name, prefix):
    """Whether the temporary file `name` in `folder` was left by a writer that is gone: a process
    of this machine that no longer runs, another machine's file untouched for STALE seconds, or a
    name that says no writer (made before names said it)."""
    host, _, rest = name[len(prefix):].partition('-')
    pid = rest.split('.', 1)[0]
    if len(host) != 8 or not pid.isdigit():
        return True
    if host != HOST:
        try:
            return time.time() - os.path.getmtime(os.path.join(folder, name)) > STALE
        except OSError:   # removed meanwhile
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # another user's process: it runs
        pass
    return False


def remove_leftovers(path):
    """Delete what an interrupted atomic write of `path` left behind (not what a writer that
    still runs is writing)."""
    d, base = os.path.split(os.path.abspath(path))
    prefix = f'.{base}.'
    for f in os.listdir(d) if os.path.isdir(d) else []:
        if f.startswith(prefix) and PART in f and _abandoned(d, f, prefix):
            remove(os.path.join(d, f))


def remove(p):
    """Delete a file or a folder, if it is there."""
    if os.path.isdir(p):
        shutil.rmtree(p, ignore_errors=True)
    elif os.path.exists(p):
        os.remove(p)


def write_text(path, text):
    with atomic(path) as tmp, open(tmp, 'w') as f:
        f.write(text)


class Damaged(Exception):
    """A record that is there but cannot be read (cut short, garbage, not what it should hold);
    its message is one line that names the file."""


def read_json(path, valid=lambda value: True):
    """The JSON record in `path`, or None when there is no such file. Damaged (one line naming
    the file) when it cannot be read or valid(value) is false: the caller says what happens next."""
    import json
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, ValueError) as e:
        what = 'empty' if not raw.strip() else f'cut short or damaged: {str(e)[:80]}'
        raise Damaged(f'{path} cannot be read ({what})') from None
    if not valid(value):
        raise Damaged(f'{path} cannot be read (not the record it should be)')
    return value


def save_png(path, img):
    """Write a float image in [0, 1] (H, W) or (H, W, 1|3) as an 8-bit PNG."""
    import imageio.v3 as iio
    img = np.clip(np.asarray(img, np.float32), 0, 1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    with atomic(path) as tmp:
        iio.imwrite(tmp, np.round(img * 255).astype(np.uint8), extension='.png')


def montage(rows, gap=2, invert_gray=True):
    """A grid picture from rows of same-sized images (H, W, C), float in [0, 1] or uint8: one row
    per list. Grayscale images are inverted (dark ink on white, as in the paper's figures)."""
    rows = [[x.astype(np.float32) / 255 if x.dtype == np.uint8 else x for x in r] for r in rows]
    H, W, C = rows[0][0].shape
    n = max(len(r) for r in rows)
    canvas = np.ones((len(rows) * (H + gap) - gap, n * (W + gap) - gap, max(C, 1)), np.float32)
    for i, r in enumerate(rows):
        for j, x in enumerate(r):
            canvas[i * (H + gap):i * (H + gap) + H, j * (W + gap):j * (W + gap) + W] = \
                1 - x if (C == 1 and invert_gray) else x
    return canvas


def fault(point, epoch=None):
    """For the crash tests: with BIAL_FAULT=POINT (or POINT@EPOCH) the process kills itself
    with SIGKILL when it reaches that point. Unset, this does nothing."""
    if fault_armed(point, epoch):
        os.kill(os.getpid(), signal.SIGKILL)


def fault_armed(point, epoch=None):
    name, _, at = os.environ.get('BIAL_FAULT', '').partition('@')
    return name == point and (not at or epoch is None or int(at) == epoch)
