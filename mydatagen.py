"""Augmentation and batching of training images, inside the TensorFlow graph.

The published code augmented one image at a time in Python (Keras 2's ImageDataGenerator), which
was most of its training time. Here one batch is transformed at once by a single
ImageProjectiveTransformV3 call, with the same geometry as the published augmentation (docs/method.md,
"Augmentation"): per image a random rotation, shift, shear (in degrees) and horizontal flip,
composed into one affine map, bilinear, points outside filled from the nearest edge pixel; then
brightness x U[0.8, 1.2], clipped at 1 from above.

    ds = mydatagen.batches(X, Y, batch_size=8, seed=0)   # infinite; floor(N/8) steps an epoch
    model.fit(ds, steps_per_epoch=len(X) // 8, epochs=...)
"""
import math

import numpy as np
import tensorflow as tf

import mycli
import mydatasets as md

ROTATION = 15.0        # degrees, uniform in [-ROTATION, ROTATION]
SHIFT = 0.15           # fraction of height / width
SHEAR = 0.3            # degrees (what the published shear_range=0.3 meant)
FLIP = 0.5             # probability of a horizontal flip
BRIGHTNESS = (0.8, 1.2)


class Augment:
    """The ranges of the augmentation; `Augment.none()` is the identity."""

    def __init__(self, rotation=ROTATION, shift=SHIFT, shear=SHEAR, flip=FLIP, brightness=BRIGHTNESS):
        self.rotation, self.shift, self.shear, self.flip = rotation, shift, shear, flip
        self.brightness = brightness

    @classmethod
    def none(cls):
        return cls(0, 0, 0, 0, (1, 1))

    def params(self, n, H, W, seed):
        """Random parameters of n images from a stateless seed (shape [2]): a dict of (n,) tensors:
        theta, shear (radians), dx, dy (pixels along columns / rows), flip (0/1), gain."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
        u = lambda i, r: tf.random.stateless_uniform([n], seeds[i], -r, r)
        deg = math.pi / 180
        return {'theta': u(0, self.rotation * deg), 'dx': u(1, self.shift) * W, 'dy': u(2, self.shift) * H,
                'flip': tf.cast(tf.random.stateless_uniform([n], seeds[3]) < self.flip, tf.float32),
                'shear': u(4, self.shear * deg),
                'gain': tf.random.stateless_uniform([n], seeds[5], self.brightness[0], self.brightness[1])}


def matrices(p, H, W):
    """(n, 3, 3) maps from output to input pixel coordinates (x = column, y = row), composed as
    Keras 2.x's apply_affine_transform did (it builds rotation @ shift @ shear in (x, y) order
    and applies it about the image centre), then the horizontal flip of the result."""
    c, s = tf.cos(p['theta']), tf.sin(p['theta'])
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    mat = lambda rows: tf.stack([tf.stack(r, -1) for r in rows], -2)
    rot = mat([[c, -s, zero], [s, c, zero], [zero, zero, one]])
    shift = mat([[one, zero, p['dx']], [zero, one, p['dy']], [zero, zero, one]])
    shear = mat([[one, -tf.sin(p['shear']), zero], [zero, tf.cos(p['shear']), zero], [zero, zero, one]])
    ox, oy = W / 2 - 0.5, H / 2 - 0.5
    to_centre = tf.constant([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], tf.float32)
    from_centre = tf.constant([[1, 0, ox], [0, 1, oy], [0, 0, 1]], tf.float32)
    m = from_centre @ rot @ shift @ shear @ to_centre
    f = p['flip']   # flip afterwards: output column x reads the transformed image at W-1-x
    flip = mat([[1 - 2 * f, zero, f * (W - 1)], [zero, one, zero], [zero, zero, one]])
    return m @ flip


def warp(images, m, interpolation='BILINEAR'):
    """Apply (n, 3, 3) output->input (x, y) maps to images (n, H, W, C), nearest-edge fill."""
    t = tf.reshape(m, [-1, 9])[:, :8]   # a0 a1 a2 b0 b1 b2 c0 c1 (c0 = c1 = 0 for affine maps)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=t, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation=interpolation, fill_mode='NEAREST')


def augment(images, seed, masks=None, aug=None, rows=None):
    """Augment a batch (n, H, W, C) float32 in [0, 1] with a stateless `seed` (shape [2]).
    With `masks` (n, H, W, 1), the same geometric transform is applied to them (no brightness)
    and (images, masks) is returned. rows=(first, total): the images are rows first.. of a batch
    of `total`, and get exactly the transforms those rows get in the whole batch."""
    aug = aug or Augment()
    images = tf.convert_to_tensor(images, tf.float32)
    n, H, W = tf.shape(images)[0], images.shape[1], images.shape[2]
    if rows is None:
        p = aug.params(n, H, W, seed)
    else:
        p = {k: v[rows[0]:rows[0] + n] for k, v in aug.params(rows[1], H, W, seed).items()}
    m = matrices(p, H, W)
    both = images if masks is None else tf.concat([images, tf.cast(masks, tf.float32)], -1)
    out = warp(both, m)
    x = tf.minimum(out[..., :images.shape[-1]] * p['gain'][:, None, None, None], 1.0)
    return x if masks is None else (x, out[..., images.shape[-1]:])


IN_GRAPH = 1 << 30   # arrays up to this many bytes are copied into the graph; larger ones are gathered from numpy


def rows_of(a):
    """A function of a batch's indices giving those rows of the array `a` as a tensor: from a
    copy of `a` in the graph, or, for an array over IN_GRAPH bytes (a folder of photographs),
    from `a` itself, so that the images are not held twice in memory."""
    if a.nbytes <= IN_GRAPH:
        t = tf.constant(a)
        return lambda i: tf.gather(t, i)

    def gather(i):
        out = tf.numpy_function(lambda j: a[j], [i], tf.as_dtype(a.dtype), stateful=False)
        out.set_shape([None] + list(a.shape[1:]))
        return out
    return gather


def to_float(images):
    """Images as float32 in [0, 1]: uint8 ones (the data sets' 8-bit images, mydatasets.compact)
    are converted here, a batch at a time; a numpy array stays one, a tensor (in the graph) one.
    The same values either way, those numpy's division gives (and the float32 data sets hold): in
    the graph TensorFlow's x / 255 differs from it in the last bit for some levels (249/255), so
    each level is looked up instead."""
    if images.dtype != np.uint8:   # (tf.uint8 compares equal to np.uint8)
        return images
    if isinstance(images, np.ndarray):
        return md.LEVELS[images]
    return tf.gather(md.LEVELS, tf.cast(images, tf.int32))


def batches(X, Y=None, batch_size=8, seed=0, augment_data=True, masks=None, aug=None, start_epoch=0, part=None,
            flip=None, warp=1.0):
    """An endless tf.data pipeline of (images, labels) batches (or (images, masks, labels) with
    `masks`): reshuffled every epoch, floor(N / batch_size) full batches an epoch, augmented in
    the graph, prefetched. Same seed, same batches. Epoch e's order and augmentation come from
    (seed, e) alone, so `start_epoch` makes a resumed run see what the uninterrupted run would
    have seen, and a new iterator over the dataset starts the same stream (Keras makes a second
    one under tf.distribute). part=(lo, hi, batch_size): only rows lo:hi of every batch,
    exactly as they are in the whole batch (see distribute()). flip: the probability of a
    horizontal flip (None: FLIP, the published; `aug`, if given, has its own); warp: the rotation,
    shift and shear ranges times this (1: the published)."""
    N = len(X)
    aug = aug or Augment(ROTATION * warp, SHIFT * warp, SHEAR * warp, flip=FLIP if flip is None else flip)
    check_batch(N, batch_size)
    arrays = [rows_of(a) for a in [X] + ([masks] if masks is not None else []) + ([Y] if Y is not None else [])]
    steps = N // batch_size

    def epoch(e):
        # shuffle indices, not images: a 60,000-image shuffle buffer of copies costs memory and time
        key = tf.stack([tf.constant(int(seed), tf.int64), e])
        order = tf.argsort(tf.random.stateless_uniform([N], key))[:steps * batch_size]
        seeds = tf.random.experimental.stateless_split(key + [0, 1 << 40], steps)   # one per batch
        return tf.data.Dataset.from_tensor_slices((tf.reshape(order, [steps, batch_size]), seeds))

    ds = tf.data.Dataset.counter(int(start_epoch)).flat_map(epoch)

    rows = None if part is None else (part[0], batch_size)

    def make(i, s):
        got = [rows(i if part is None else i[part[0]:part[1]]) for rows in arrays]
        got[0] = to_float(got[0])
        if masks is not None:   # 0/1, whatever their type
            got[1] = tf.cast(got[1], tf.float32)
        if augment_data:
            if masks is not None:
                got[0], got[1] = augment(got[0], s, got[1], aug, rows)
            else:
                got[0] = augment(got[0], s, aug=aug, rows=rows)
        return tuple(got) if len(got) > 1 else got[0]

    return ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def distribute(strategy, batch_size, make):
    """The batches of a run under a tf.distribute strategy. make(part) builds the pipeline of
    rows part=(lo, hi, batch_size) of every global batch (batches(..., part=part) and friends). Each worker
    builds only its own rows, from the same seeds, and cuts them into one batch per local
    replica: every replica gets exactly its share of the batch one device would see, whatever
    the number of replicas. (TensorFlow's own dataset splitting rewrites the pipeline and loses
    the seeded shuffle order; this does not.)"""
    R = strategy.num_replicas_in_sync
    if R == 1:
        return make(None)
    b = batch_size // R

    def per_worker(ctx):
        local = R // ctx.num_input_pipelines
        lo = ctx.input_pipeline_id * local * b
        ds = make((lo, lo + local * b, batch_size))
        if local > 1:   # one batch per local replica, in turn (a batch: a tuple or a dict of parts)
            split = lambda x: tf.reshape(x, [local, b] + x.shape[1:].as_list())
            ds = ds.map(lambda *t: tf.nest.map_structure(split, t if len(t) > 1 else t[0])).unbatch()
        return ds.prefetch(tf.data.AUTOTUNE)

    return strategy.distribute_datasets_from_function(per_worker)


def with_draws(ds, draws, seed=0, start_step=0, part=None):
    """Add random draws per image to each batch, a dict of named parts (phase 3): draws =
    {name: (shape per image, 'normal' or 'uniform' in [0, 1), stream number)}. Drawn here rather
    than in the training step so that the draw is the same whether one device or several replicas
    share the batch. Each draw has its own seeded stream of per-batch seeds; a run resumed at step
    `start_step` (epochs done x steps per epoch) skips to where the uninterrupted run was, so it
    draws the same. part=(lo, hi, batch size): rows lo:hi of the whole batch's draws (ds holds
    those rows)."""
    if not draws:
        return ds
    names = list(draws)
    streams = [tf.data.Dataset.random(seed=int(seed) + draws[k][2]).skip(2 * int(start_step)).batch(2) for k in names]

    def add(batch, *seeds):
        batch = dict(batch)
        for k, s in zip(names, seeds):
            shape, kind = [int(d) for d in draws[k][0]], draws[k][1]
            draw = tf.random.stateless_uniform if kind == 'uniform' else tf.random.stateless_normal
            if part is None:
                batch[k] = draw(tf.concat([tf.shape(batch['label'])[:1], shape], 0), seed=s)
            else:
                batch[k] = draw([part[2]] + shape, seed=s)[part[0]:part[1]]
        return batch

    return (tf.data.Dataset.zip(ds, *streams).map(add, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def with_crops(ds, crops, batch_size, part=None):
    """Add to each batch (a dict of named parts) a 'background' per image, drawn from the endless
    generator `crops` of (H, W, C) arrays (phase 3, back=real); part as in batches()."""
    first = next(crops)
    bg = (tf.data.Dataset.from_generator(lambda: crops, output_signature=tf.TensorSpec(first.shape, tf.float32))
          .batch(batch_size, drop_remainder=True))
    if part is not None:
        bg = bg.map(lambda b: b[part[0]:part[1]])
    return tf.data.Dataset.zip(ds, bg).map(lambda batch, b: dict(batch, background=b)).prefetch(tf.data.AUTOTUNE)


def check_batch(N, batch_size):
    if N < batch_size:
        raise mycli.UserError(f'batch size {batch_size} is larger than the {N} training images')

