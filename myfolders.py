"""A user's own data: a folder of images (and their masks) as a data set, for every script.

    DIR/train/<class>/*.png|jpg|jpeg|bmp|tif|tiff        the training set; classes = sorted folder names
    DIR/test/<class>/...  DIR/test-<name>/<class>/...     one or more test sets ('test', '<name>')
    DIR/masks/<split>/<class>/<image's stem>.png          optional masks, white = object
                                                          (split: train, test, test-<name>)

The layout of Keras' image_dataset_from_directory, with test sets beside the training set. Gray or
RGB is decided by the images (all gray: one channel); every image must have the size of the
first unless --size S resizes them all to S x S. Images are kept as uint8 (converted to [0, 1]
per batch) and decoded once: the decoded arrays are cached, keyed by the files' names, sizes and
modification times, so a changed folder is decoded again.
"""
import hashlib
import os

import numpy as np

from mydownload import DataError, cached_arrays

EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
GRAY = ('1', 'L', 'LA', 'I', 'I;16', 'I;16B', 'I;16L', 'F')   # Pillow's one-channel modes


def is_folder(name):
    return os.path.isdir(os.path.join(name, 'train'))


def _images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(EXTS) and not f.startswith('.'))


def scan(root):
    """(classes, splits): the sorted class names of train/, and per split (train, then test,
    then test-<name> sorted) its (label, path) pairs. One-line errors for a layout that is not one."""
    train = os.path.join(root, 'train')
    if not os.path.isdir(train):
        raise DataError(f'{root} has no train/ folder (expected {root}/train/<class>/<images>)')
    classes = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)) and not d.startswith('.'))
    if not classes:
        raise DataError(f'{train} has no class folders (expected {train}/<class>/<images>)')
    names = ['train'] + (['test'] if os.path.isdir(os.path.join(root, 'test')) else []) + sorted(
        d for d in os.listdir(root) if d.startswith('test-') and os.path.isdir(os.path.join(root, d)))
    if len(names) == 1:
        raise DataError(f'{root} has no test set (expected {root}/test/<class>/ or {root}/test-<name>/<class>/)')
    splits = {}
    for split in names:
        folder = os.path.join(root, split)
        found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith('.'))
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(f'{folder}/{unknown[0]} is a class that {train} does not have')
        pairs = []
        for label, c in enumerate(classes):
            if c not in found:
                continue
            files = _images(os.path.join(folder, c))
            if not files:
                raise DataError(f'{folder}/{c} holds no images ({", ".join(EXTS)})')
            pairs += [(label, os.path.join(folder, c, f)) for f in files]
        if not pairs:
            raise DataError(f'{folder} holds no class folders with images')
        splits[split] = pairs
    return classes, splits


def mask_path(root, split, path):
    return os.path.join(root, 'masks', split, os.path.basename(os.path.dirname(path)),
                        os.path.splitext(os.path.basename(path))[0] + '.png')


def load(root, size=None, masks=False):
    """(classes, {split: (X uint8 (N, H, W, C), Y int32, M uint8 (N, H, W, 1) 0/1 or None)}) of
    the folder data set at `root`; splits in order (train, test, test-<name>...)."""
    from PIL import Image
    classes, splits = scan(root)
    everything = [p for pairs in splits.values() for _, p in pairs]
    wanted = [(s, p, mask_path(root, s, p)) for s, pairs in splits.items() for _, p in pairs]
    if masks:
        missing = [m for _, p, m in wanted if not os.path.isfile(m)]
        if missing:
            raise DataError(f'masks are asked for, but {missing[0]} is missing '
                            f'({len(missing)} of {len(wanted)} images have no mask)')
    modes, shapes = set(), {}
    for p in everything:   # headers only: sizes and colour modes, before anything is decoded
        try:
            with Image.open(p) as im:
                modes.add(im.mode)
                shapes.setdefault(im.size, p)
        except Exception as e:
            raise DataError(f'cannot read image {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})')
    if size is None and len(shapes) > 1:
        (s1, p1), (s2, p2) = list(shapes.items())[:2]
        raise DataError(f'images of different sizes ({p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]}): '
                        'give --size S to resize them all to S x S')
    W, H = (size, size) if size else next(iter(shapes))
    C = 1 if modes <= set(GRAY) else 3
    files = everything + ([m for _, _, m in wanted] if masks else [])
    key = 'folder-' + hashlib.sha256(f'{os.path.abspath(root)}|{size}|{C}|{masks}'.encode()).hexdigest()[:12]

    def build():
        from tqdm import tqdm
        arrays = []
        bar = tqdm(total=len(files), desc=f'decoding {os.path.basename(os.path.abspath(root))}', unit='image',
                   disable=None, leave=False)
        for split, pairs in splits.items():
            X = np.empty((len(pairs), H, W, C), np.uint8)
            M = np.empty((len(pairs), H, W, 1), np.uint8) if masks else None
            for i, (_, p) in enumerate(pairs):
                X[i], native = _decode(p, 'L' if C == 1 else 'RGB', (W, H))
                if masks:
                    m, m_size = _decode(mask_path(root, split, p), 'L', (W, H))
                    if m_size != native:
                        raise DataError(f'mask {mask_path(root, split, p)} is {m_size[0]}x{m_size[1]}, '
                                        f'its image {p} is {native[0]}x{native[1]}')
                    M[i] = m > 127
                bar.update(2 if masks else 1)
            arrays += [X, np.array([l for l, _ in pairs], np.int32)] + ([M] if masks else [])
        bar.close()
        return arrays

    arrays = cached_arrays(key, files, build)
    step = 3 if masks else 2
    return classes, {s: (arrays[i * step], arrays[i * step + 1], arrays[i * step + 2] if masks else None)
                     for i, s in enumerate(splits)}


def _decode(path, mode, size):
    """The image at `path` as a uint8 array (H, W[, C]) in `mode`, resized (bilinear,
    anti-aliased) to `size` (W, H) if it is not that size; and its own size."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            native = im.size
            im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, Image.BILINEAR, reducing_gap=None)
            a = np.asarray(im, np.uint8)
    except Exception as e:   # truncated, corrupt, not an image
        raise DataError(f'cannot decode image {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""})')
    return (a[..., None] if a.ndim == 2 else a), native


def photos(folder, size, channels, seed=0):
    """Endless random size x size crops of the photographs in `folder` (phase 3's `real`
    backgrounds, --backgrounds DIR), float32 in [0, 1] with `channels` channels."""
    from PIL import Image
    names = _images(folder) if os.path.isdir(folder) else []
    if not names:
        raise DataError(f'--backgrounds {folder}: no photographs ({", ".join(EXTS)}) in that folder')
    pics = []
    for n in names:
        with Image.open(os.path.join(folder, n)) as im:
            im = im.convert('L' if channels == 1 else 'RGB')
            if min(im.size) < size:   # too small to crop from: scaled up so that its short side fits
                k = size / min(im.size)
                im = im.resize((max(size, round(im.size[0] * k)), max(size, round(im.size[1] * k))), Image.BILINEAR)
            a = np.asarray(im, np.float32) / 255
        pics.append(a[..., None] if a.ndim == 2 else a)
    return crops(pics, size, seed)


def crops(pictures, size, seed=None):
    """Endless random size x size crops of `pictures` (arrays at least that large): a picture
    drawn at random, then a place in it, from one seeded generator."""
    rng = np.random.default_rng(seed)
    while True:
        b = pictures[rng.integers(len(pictures))]
        y, x = rng.integers(b.shape[0] - size + 1), rng.integers(b.shape[1] - size + 1)
        yield b[y:y + size, x:x + size]


def has_masks(name):
    """Whether `name` is a folder data set with a masks/ folder."""
    return is_folder(name) and os.path.isdir(os.path.join(name, 'masks'))


def export(data, root, masks=False):
    """Write `data` (a mydatasets.Data) as a folder data set at `root`: the training set in
    train/<class>/, the first test set in test/<class>/, every other one in test-<name>/<class>/
    (class folders named by label, zero-padded so that they sort in label order), each image
    <index>.png; with masks, DIR/masks/<split>/... = the image's X > 0 for the training set and
    for the first test set, which the other test sets of the background data sets share."""
    from tqdm import tqdm
    from myfiles import save_png
    width = len(str(data.classes - 1))
    first = data.tests[0][1][0]
    splits = [('train', data.train, data.train[0])] + \
        [('test' if i == 0 else f'test-{name}', s, first if len(s[0]) == len(first) else s[0])
         for i, (name, s) in enumerate(data.tests)]
    total = sum(len(s[1]) for _, s, _ in splits) * (2 if masks else 1)
    with tqdm(total=total, desc=f'writing {root}', unit='file', disable=None) as bar:
        for split, (X, Y), clean in splits:
            for i, (x, y) in enumerate(zip(X, Y)):
                cls = f'{int(y):0{width}d}'
                pictures = [(split, x / 255 if x.dtype == np.uint8 else x)]
                if masks:
                    pictures.append((os.path.join('masks', split), (clean[i] > 0).astype(np.float32)))
                for folder, picture in pictures:
                    os.makedirs(os.path.join(root, folder, cls), exist_ok=True)
                    save_png(os.path.join(root, folder, cls, f'{i}.png'), picture)
                    bar.update()
