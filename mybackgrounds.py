"""The synthetic backgrounds: the paper's six test patterns and our eight validation patterns.

How a background is put behind a grayscale image is here too (apply_background). Each pattern is an s x s float32 array, 1 = ink, for any s >= 16. The test patterns follow the
published formulas (docs/method.md, "Test backgrounds"), written as whole-array numpy
expressions. The validation patterns are different drawings (docs/recipe.md says why they are
a fair stand-in): every choice of a recipe is made on them, never on the test patterns.

    python mybackgrounds.py [--size 32] [--validation] [--output backgrounds.png]   # a PNG of them
"""
import numpy as np
from skimage.draw import circle_perimeter, line, rectangle

import mycli

MIN_SIZE = 16


def _check(s):
    if int(s) != s or s < MIN_SIZE:
        raise ValueError(f'background size must be an integer >= {MIN_SIZE}, got {s}')
    return int(s)


def stripes(s):
    # diagonal bands 2 px thick, period 10
    s = _check(s)
    y, x = np.ogrid[:s, :s]
    return (((y - x + s - 1) % 10) < 2).astype(np.float32)


def checkerboard(s):
    # 6 px squares, grid shifted by 2 px
    s = _check(s)
    y, x = np.ogrid[:s, :s]
    return ((((y + 2) // 6 + (x + 2) // 6) % 2) == 1).astype(np.float32)


def border(s):
    s = _check(s)
    img = np.ones((s, s), np.float32)
    img[2:-2, 2:-2] = 0
    return img


def _draw_circles(img, centres_radii):
    for cy, cx, r in centres_radii:
        rr, cc = circle_perimeter(cy, cx, r, shape=img.shape)
        img[rr, cc] = 1
    return img


def circumferences(s):
    s = _check(s)
    return _draw_circles(np.zeros((s, s), np.float32),
                         [(8, 8, 6), (s - 8, 8, 6), (8, s - 8, 6), (s - 8, s - 8, 6)])


def clock(s):
    s = _check(s)
    c = s // 2
    img = _draw_circles(np.zeros((s, s), np.float32), [(c, c, c - 1), (c, c, c - 2)])
    for start, end in [((c - 1, 0), (c + 1, 6)), ((c - 1, s - 6), (c + 1, s - 1)),
                       ((0, c - 1), (6, c + 1)), ((s - 6, c - 1), (s - 1, c + 1))]:
        img[rectangle(start, end, shape=img.shape)] = 1
    return img


def salt_pepper(s, rate=0.25):
    # the published code drew the positions from a fixed RandomState(0): same pattern every time
    s = _check(s)
    img = np.zeros(s * s, np.float32)
    img[np.random.RandomState(0).choice(s * s, int(s * s * rate), replace=False)] = 1
    return img.reshape(s, s)


# the paper's order: Stripes, Board, Border, Circles, Clock, Random
BACKGROUNDS = {f.__name__: f for f in (stripes, checkerboard, border, circumferences, clock, salt_pepper)}
# rates of the *_noises data sets: 0, 0.01, ..., 0.09, then 0.1, 0.2, ..., 1.0 (20 rates), built
# as the published code built them (np.arange) so that int(s*s*rate) gives the same pixel counts
NOISE_RATES = np.concatenate((np.arange(0, 0.1, 0.01), np.arange(0.1, 1.1, 0.1))).tolist()



# ----------------------------------------------------------------------------------------------
# Validation backgrounds: our own patterns, drawn by other rules than the six above, with the
# same kinds of structure (periodic lines and blobs, curves, strokes, random specks, large
# areas) and ink shares in the same range (10-40%). Fixed patterns, as the test's are.

def grid(s):
    # 1 px lines every 7 px, across and down (a plaid)
    s = _check(s)
    y, x = np.ogrid[:s, :s]
    return ((y % 7 == 3) | (x % 7 == 3)).astype(np.float32)


def dots(s):
    # 2x2 dots on a square lattice of pitch 5 px
    s = _check(s)
    y, x = np.ogrid[:s, :s]
    return ((y % 5 < 2) & (x % 5 < 2)).astype(np.float32)


def waves(s):
    # sine curves of period 12 px and amplitude 2 px, one every 6 rows, about 2 px thick
    s = _check(s)
    y, x = np.mgrid[:s, :s].astype(np.float32)
    return (np.abs((y - 2 * np.sin(2 * np.pi * x / 12)) % 6 - 3) < 1.0).astype(np.float32)


def scribble(s):
    # straight strokes 2 px thick between seeded random points (6 at 32 px, more on larger
    # images): the most digit-like clutter
    s = _check(s)
    rng = np.random.default_rng(2020)
    img = np.zeros((s, s), np.float32)
    for r0, c0, r1, c1 in rng.integers(0, s - 1, (max(3, round(6 * s / 32)), 4)):
        for d in (0, 1):
            rr, cc = line(r0 + d, c0, r1 + d, c1)
            img[rr, cc] = 1
    return img


def blobs(s):
    # a smooth random field (bicubic upsampling of coarse noise) above its 65th percentile:
    # large irregular patches
    from skimage.transform import resize
    s = _check(s)
    coarse = np.random.default_rng(7).normal(size=(s // 6 + 2, s // 6 + 2))
    field = resize(coarse, (s, s), order=3, mode='reflect', anti_aliasing=False)
    return (field > np.quantile(field, 0.65)).astype(np.float32)


def speckle(s):
    # 2x2 specks on 15% of the cells of a 2 px grid, from their own seeded generator
    s = _check(s)
    cells = np.random.default_rng(11).random(((s + 1) // 2, (s + 1) // 2)) < 0.15
    return np.kron(cells, np.ones((2, 2)))[:s, :s].astype(np.float32)


def rising(s):
    # straight bands rising to the right at slope 2 (about 63 degrees), 2 px wide along a row,
    # one every 6 px along a row (the test's stripes: 45 degrees, one every 10). With falling,
    # added on 2026-12-02 after a test run showed that a classifier can hold lines of one
    # orientation and fail their mirror image, which none of the six above could show
    # (docs/recipe.md): found through the test set, and said so there.
    s = _check(s)
    y, x = np.ogrid[:s, :s]
    return (((2 * x + y) % 12) < 4).astype(np.float32)


def falling(s):
    # rising mirrored left to right: the same bands falling to the right
    return rising(s)[:, ::-1].copy()


VALIDATION = {f.__name__: f for f in (grid, dots, waves, scribble, blobs, speckle, rising, falling)}


# ----------------------------------------------------------------------------------------------
# Putting a background behind a grayscale image

HALO = 2   # the paper keeps a test digit inside its ink dilated by a disk of this radius


def foreground(X, radius=HALO):
    """The region a test image keeps: `X > 0` dilated by a disk of `radius` (0: the ink
    itself), for a batch (N, H, W) or (N, H, W, 1). Shifted ORs over the whole batch instead of
    one scipy/skimage call per image: the MNIST test set takes milliseconds."""
    ink = np.asarray(X) > 0
    if ink.ndim == 4:
        if ink.shape[-1] != 1:
            raise ValueError('backgrounds apply to grayscale images (1 channel)')
        ink = ink[..., 0]
    H, W = ink.shape[1:3]
    r = int(radius)
    padded = np.pad(ink, ((0, 0), (r, r), (r, r)))
    out = np.zeros_like(ink)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:   # skimage.morphology.disk(r)
                out |= padded[:, r + dy:r + dy + H, r + dx:r + dx + W]
    return out


def apply_background(X, b, halo=HALO):
    """Put background b (H, W) behind grayscale images X (N, H, W, 1): keep X on its ink
    dilated by a disk of radius `halo` (the paper's test: 2, which leaves a dark rim around the
    object; 0: the background reaches the ink), take b elsewhere. Returns a new float32 array."""
    return apply_backgrounds(X, [b], halo)[0]


def apply_backgrounds(X, backgrounds, halo=HALO):
    """apply_background for each of several backgrounds; the dilated ink is computed once."""
    # 8-bit images (a data set's, mydatasets.compact) as the float32 levels they stand for
    X = np.asarray(X)
    X = X.astype(np.float32) / 255 if X.dtype == np.uint8 else X.astype(np.float32, copy=False)
    keep = foreground(X, halo)[..., None]
    return [np.where(keep, X, np.asarray(b, np.float32)[None, :, :, None]) for b in backgrounds]


def main():
    from myfiles import save_png
    p = mycli.ArgumentParser(__doc__)
    p.add_argument('--size', type=mycli.positive_int, default=32, help=f'side of each pattern in pixels (>= {MIN_SIZE})')
    p.add_argument('--scale', type=mycli.positive_int, default=4, help='pixels per pattern pixel in the PNG')
    p.add_argument('--validation', action='store_true', help='add a second row: the validation backgrounds')
    p.add_argument('--output', default='backgrounds.png', help='PNG file to write (default backgrounds.png)')
    args = p.parse_args()
    output = mycli.output_file(args.output, None, ('.png',))
    if args.size < MIN_SIZE:
        raise mycli.UserError(f'--size must be at least {MIN_SIZE}, got {args.size}')
    rows = [BACKGROUNDS] + ([VALIDATION] if args.validation else [])
    gap = np.full((args.size, 2), 0.5, np.float32)
    strips = [np.concatenate(sum([[f(args.size), gap] for f in r.values()], [])[:-1], axis=1) for r in rows]
    width = max(s.shape[1] for s in strips)   # (the shorter row padded with white)
    strips = [np.pad(s, ((0, 0), (0, width - s.shape[1]))) for s in strips]
    picture = np.concatenate(sum([[s, np.full((2, s.shape[1]), 0.5, np.float32)] for s in strips], [])[:-1])
    save_png(output, 1 - np.kron(picture, np.ones((args.scale, args.scale), np.float32)))  # dark ink on white
    print(f'wrote {output}: {", ".join(n for r in rows for n in r)}')


if __name__ == '__main__':
    mycli.run_main(main)
