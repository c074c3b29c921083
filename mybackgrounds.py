"""The six synthetic test backgrounds of the paper, and how they are put behind a test image.

Each pattern is an s x s float32 array, 1 = ink, for any s >= 16. The formulas are the
published ones (see SPEC.md, "Test backgrounds"), written as whole-array numpy expressions.

    python mybackgrounds.py [--size 32] [--output backgrounds.png]
"""
import numpy as np
from skimage.draw import circle_perimeter, rectangle

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

# disk of radius 2 (skimage.morphology.disk(2)) as (dy, dx) offsets: 13 points
_DISK2 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if dy * dy + dx * dx <= 4]


def foreground(X):
    """The region a test image keeps: `X > 0` dilated by a disk of radius 2, for a batch
    (N, H, W) or (N, H, W, 1). Shifted ORs over the whole batch instead of one
    scipy/skimage call per image: the MNIST test set takes milliseconds."""
    ink = np.asarray(X) > 0
    if ink.ndim == 4:
        if ink.shape[-1] != 1:
            raise ValueError('backgrounds apply to grayscale images (1 channel)')
        ink = ink[..., 0]
    H, W = ink.shape[1:3]
    padded = np.pad(ink, ((0, 0), (2, 2), (2, 2)))
    out = np.zeros_like(ink)
    for dy, dx in _DISK2:
        out |= padded[:, 2 + dy:2 + dy + H, 2 + dx:2 + dx + W]
    return out


def apply_background(X, b):
    """Put background b (H, W) behind grayscale images X (N, H, W, 1): keep X on the dilated
    ink, take b elsewhere. Returns a new float32 array; X is not changed."""
    X = np.asarray(X, np.float32)
    keep = foreground(X)[..., None]
    return np.where(keep, X, np.asarray(b, np.float32)[None, :, :, None])


def main():
    import argparse
    p = argparse.ArgumentParser(description='Write a PNG of the six test backgrounds side by side.')
    p.add_argument('--size', type=int, default=32, help='side of each pattern in pixels (>= 16)')
    p.add_argument('--scale', type=int, default=4, help='pixels per pattern pixel in the PNG')
    p.add_argument('--output', default='backgrounds.png', help='PNG file to write')
    args = p.parse_args()
    try:
        imgs = [f(args.size) for f in BACKGROUNDS.values()]
    except ValueError as e:
        p.exit(2, f'error: {e}\n')
    gap = np.full((args.size, 2), 0.5, np.float32)
    row = np.concatenate(sum([[im, gap] for im in imgs], [])[:-1], axis=1)
    row = np.kron(row, np.ones((args.scale, args.scale), np.float32))
    from mydatasets import save_png
    save_png(args.output, 1 - row)  # ink drawn dark on white, as in the paper's figure
    print(f'wrote {args.output}: {", ".join(BACKGROUNDS)}')


if __name__ == '__main__':
    main()
