"""The adversarial phases as small keras.Models with their own train_step, so that fit() drives
them (progress bars, callbacks, checkpoints, tf.distribute): MaskTrainer (phase 2) and
BackgroundTrainer (phase 3), each with the callback that draws its pictures; and the per-image
binarization of masks inside the graph.

    trainer = mytrainers.BackgroundTrainer(classifier, settings, gen)   # settings: a mysettings.Phase3
    trainer.compile(optimizer=..., gen_optimizer=...)
    trainer.fit(trainer.batches(mydatagen.batches(X, Y, 8), 8), steps_per_epoch=..., epochs=...)
"""
import contextlib
import os

import keras
import numpy as np
import tensorflow as tf

import mydatagen
from mycli import BINARIZE, UserError
from myfiles import montage, save_png
from mymodels import noise_size


# ----------------------------------------------------------------------------------------------
# Masks: binarized per image, inside the graph

def otsu_threshold(M, nbins=256):
    """Per-image Otsu threshold of a batch (n, ...), computed as skimage.filters.threshold_otsu
    does: a 256-bin histogram over the image's own [min, max] (numpy's bin edges, float32), the
    bin centre that maximises the between-class variance; a constant image gives its value."""
    v = tf.reshape(tf.cast(M, tf.float32), [tf.shape(M)[0], -1])
    lo, hi = tf.reduce_min(v, 1, keepdims=True), tf.reduce_max(v, 1, keepdims=True)
    # edges as np.linspace makes them (in float64, then rounded to float32)
    k = tf.range(nbins + 1, dtype=tf.float64)[None] / nbins
    lo64, hi64 = tf.cast(lo, tf.float64), tf.cast(hi, tf.float64)
    edges = tf.cast(lo64 + (hi64 - lo64) * k, tf.float32)                        # (n, nbins+1)
    span = tf.where(hi > lo, hi - lo, tf.ones_like(hi))
    idx = tf.clip_by_value(tf.cast(tf.floor((v - lo) * (nbins / span)), tf.int32), 0, nbins - 1)
    # numpy's correction of values that fell on the wrong side of an edge by rounding
    idx = tf.where(v < tf.gather(edges, idx, batch_dims=1), idx - 1, idx)
    idx = tf.where((v >= tf.gather(edges, idx + 1, batch_dims=1)) & (idx < nbins - 1), idx + 1, idx)
    counts = tf.cast(tf.math.bincount(idx, minlength=nbins, maxlength=nbins, axis=-1), tf.float32)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2
    w1 = tf.cumsum(counts, 1)
    w2 = tf.cumsum(counts, 1, reverse=True)
    m1 = tf.cumsum(counts * centres, 1) / tf.maximum(w1, 1e-30)
    m2 = tf.cumsum(counts * centres, 1, reverse=True) / tf.maximum(w2, 1e-30)
    var12 = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    t = tf.gather(centres, tf.argmax(var12, 1, output_type=tf.int32), batch_dims=1)
    return tf.where(hi[:, 0] > lo[:, 0], t, lo[:, 0])


def quantile(M, q):
    """Per-image quantile of a batch (n, ...), numpy's default (linear) interpolation."""
    v = tf.sort(tf.reshape(tf.cast(M, tf.float32), [tf.shape(M)[0], -1]), 1)
    pos = q * tf.cast(tf.shape(v)[1] - 1, tf.float32)
    i = tf.cast(tf.floor(pos), tf.int32)
    j = tf.minimum(i + 1, tf.shape(v)[1] - 1)
    return v[:, i] + (v[:, j] - v[:, i]) * (pos - tf.cast(i, tf.float32))


def binarize(M, mode, area=0.2, u=None):
    """Soft masks (n, H, W, C) -> per-image binary masks (float 0/1), or the soft mask for 'none'.
    'jitter': each image cut at a threshold between Otsu's and 0.5 (Otsu's where it is above
    0.5), at the fraction u (n,) of the way, uniform in [0, 1) in training; without u (outside
    training) at the midpoint. Loose masks keep a dark border around the object, tight ones cut
    into it: the classifier meets both."""
    M = tf.cast(M, tf.float32)
    if mode == 'none':
        return M
    if mode == '0.5':
        t = tf.fill([tf.shape(M)[0]], 0.5)
    elif mode == 'otsu':
        t = otsu_threshold(M)
    elif mode == 'jitter':
        lo = otsu_threshold(M)
        t = lo + (tf.maximum(lo, 0.5) - lo) * (0.5 if u is None else u)
    elif mode == 'quantile':
        t = quantile(M, 1 - area)
    else:
        raise ValueError(f'unknown binarize mode {mode!r}; one of {", ".join(BINARIZE)}')
    return tf.cast(M >= t[:, None, None, None], tf.float32)


def unet_masks(unet, X, mode, batch_size=1024):
    """The U-Net's binarized masks of the images X (uint8 levels or float32 in [0, 1]), computed
    once before phase 3 instead of on every augmented image (--masks-once): (n, H, W, 1) uint8
    0/1, a batch at a time. Training then augments them with their images, as a data set's own
    masks; with no geometric augmentation (--warp 0 --flip 0) each still covers its image pixel
    for pixel, and only the brightness augmentation is not seen by the U-Net."""
    from tqdm import tqdm
    step = tf.function(lambda x: tf.cast(binarize(unet(x, training=False), mode), tf.uint8), reduce_retracing=True)
    out = np.empty(tuple(X.shape[:3]) + (1,), np.uint8)
    for i in tqdm(range(0, len(X), batch_size), desc='masks of the training images', unit='batch', disable=None):
        out[i:i + batch_size] = step(mydatagen.to_float(X[i:i + batch_size])).numpy()
    return out


# ----------------------------------------------------------------------------------------------
# Phase 2 and phase 3

def replica_mean(loss):
    """A per-replica loss (a mean over the replica's share of the global batch) scaled so that
    the gradients the optimiser sums across replicas are those of the global batch mean."""
    r = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / r if r > 1 else loss


def _ce(Y, logits):
    return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(Y, logits, from_logits=True))


def total_variation(M):
    return (keras.ops.mean(keras.ops.abs(M[:, 1:] - M[:, :-1])) +
            keras.ops.mean(keras.ops.abs(M[:, :, 1:] - M[:, :, :-1])))


class MaskTrainer(keras.Model):
    """Phase 2: train the U-Net so that the frozen classifier still recognises X*M, with masks
    pushed below `area` of the image and kept smooth (total variation)."""

    def __init__(self, classifier, unet, area=0.2, tv=0.1, loss='abs', **kw):
        super().__init__(**kw)
        self.classifier, self.unet = classifier, unet
        self.classifier.trainable = False
        self.area, self.tv, self.squared = area, tv, loss == 'squared'
        self.ce_mean, self.loss_mean = keras.metrics.Mean(name='ce'), keras.metrics.Mean(name='mask_loss')

    def call(self, X, training=False):
        return self.unet(X, training=training)

    @property
    def metrics(self):
        return [self.ce_mean, self.loss_mean]

    def train_step(self, data):
        X, Y = data
        with tf.GradientTape() as tape:
            M = self.unet(X, training=True)
            ce = _ce(Y, self.classifier(X * M, training=False))
            over = tf.nn.relu(tf.reduce_mean(M, [1, 2, 3]) - self.area)
            loss = ce + tf.reduce_mean(over ** 2 if self.squared else over) + self.tv * total_variation(M)
            scaled = replica_mean(loss)   # inside the tape, so that it is differentiated
        variables = self.unet.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.ce_mean.update_state(ce)
        self.loss_mean.update_state(loss)
        return {'ce': self.ce_mean.result(), 'mask_loss': self.loss_mean.result()}


class MaskPictures(keras.callbacks.Callback):
    """Phase 2 --debug: per epoch one PNG, DIR/masks-epoch-NNN.png: the images, their soft masks
    and their binarized masks (one row each)."""

    def __init__(self, unet, X, mode, area, directory):
        super().__init__()
        self.unet, self.X, self.mode, self.area, self.directory = unet, X, mode, area, directory

    def on_epoch_end(self, epoch, logs=None):
        soft = self.unet(self.X, training=False)
        hard = binarize(soft, self.mode, self.area)
        rows = [list(self.X), list(_gray_to(soft.numpy(), self.X)), list(_gray_to(hard.numpy(), self.X))]
        os.makedirs(self.directory, exist_ok=True)
        save_png(os.path.join(self.directory, f'masks-epoch-{epoch + 1:03d}.png'), montage(rows, invert_gray=False))


class MaskAgreement(keras.callbacks.Callback):
    """Phase 2 on a data set with masks of its own (manual segmentations): after each epoch, the
    intersection over union of the U-Net's binarized masks with them, per set (its first n
    images), in the epoch's logs as iou_SET: a check of the mask generator, not a training signal."""

    def __init__(self, unet, data, mode, area, n=2000, batch_size=256):
        super().__init__()
        self.unet, self.mode, self.area, self.batch_size = unet, mode, area, batch_size
        sets = dict(data.sets)
        self.sets = {name: (sets[name][0][:n], M[:n]) for name, M in data.masks.items()}

    def on_epoch_end(self, epoch, logs=None):
        for name, (X, M) in self.sets.items():
            inter = union = 0.0
            for i in range(0, len(X), self.batch_size):
                x = mydatagen.to_float(X[i:i + self.batch_size])
                hard = binarize(self.unet(x, training=False), self.mode, self.area).numpy() > 0.5
                ref = M[i:i + self.batch_size] > 0
                inter, union = inter + (hard & ref).sum(), union + (hard | ref).sum()
            if logs is not None:
                logs[f'iou_{name}'] = inter / max(union, 1)


def _gray_to(M, X):
    """Masks (n, H, W, 1) shown beside images with X's channel count."""
    return np.repeat(M, X.shape[-1], -1) if M.shape[-1] != X.shape[-1] else M


# Phase 3. A batch is a dict of named parts, built by BackgroundTrainer.batches(): 'image' and
# 'label', and what the settings need beside them: 'mask' (a data set's own masks), 'background'
# (back=noise or real), 'noise' (the generator's input, back=adv), and uniform draws per image:
# 'share' (clean_share, replay), 'cut' (binarize jitter), 'mirror' (back_flip), 'shuffle'
# (back_shuffle). Every random input is drawn in the input pipeline, per image, so a step is the same
# whether one device or several replicas share the batch; each draw has a stream of its own (the
# numbers below), so adding one never changes another.
DRAW_STREAMS = {'noise': 7919, 'background': 7919, 'share': 104729, 'cut': 15485863, 'mirror': 32452843,
                'shuffle': 49979687}
PER_IMAGE = ('image', 'mask', 'background', 'noise', 'share', 'cut', 'mirror', 'shuffle')
# the six orders of three colour channels (back_shuffle draws one)
CHANNEL_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


class BackgroundTrainer(keras.Model):
    """Phase 3: the classifier learns on Z = X*M + B*(1-M) while, with back=adv, the generator
    paints the backgrounds B that maximise the classifier's loss. The mask M is computed on the
    very (augmented) image that is trained on: from a U-Net (or several, `unets`), the heuristic
    X > 0, or the data set's own masks. `settings`: a mysettings.Phase3, whose fields say what this
    project's additions do (clean_share, average, replay, generators, back_flip, back_shuffle; all off by
    default). The backgrounds come from one of the painters below, chosen once."""

    def __init__(self, classifier, settings, gen=None, unets=(), total_steps=1, **kw):
        super().__init__(**kw)
        s = settings
        self.classifier, self.back, self.gen, self.tiles, self.seed = classifier, s.back, gen, s.tiles, int(s.seed)
        self.clean_share, self.replay, self.back_flip, self.dim = s.clean_share, s.replay, s.back_flip, s.dim
        self.back_shuffle, self.clean_back = s.back_shuffle, s.clean_back
        if self.back_shuffle and classifier.input_shape[-1] != 3:
            raise UserError(f'--back-shuffle reorders the colour channels of the painted backgrounds: the images '
                            f'here have {classifier.input_shape[-1]} channel(s), not 3')
        self.binarize_mode, self.area = s.binarize_mask, s.area
        self.generator_every = 0 if s.generators == 1 else -(-total_steps // s.generators)
        if self.generator_every:   # fresh generators so far (checkpointed: a resumed run does not restart one)
            self.generator_round = self.add_weight(shape=(), initializer='zeros', dtype='int64', trainable=False,
                                                   aggregation='only_first_replica', name='generator_round')
        if self.replay:   # (fit() sets self.history: the pool has another name)
            self.past = PastBackgrounds(s.history, classifier.input_shape[1:])
        self.average = WeightAverage(self, classifier, s.average)   # (after the pool: the checkpoints' order)
        unets = list(unets)
        for u in unets:
            u.trainable = False
        self.unet, self.more_unets = (unets[0] if unets else None), unets[1:]   # (the names checkpoints hold)
        self.mask_source = s.masks   # 'heuristic', 'manual' or 'unet'
        self.given_masks = s.masks == 'manual' or s.masks_once   # the batches carry each image's mask
        self.seeds = keras.random.SeedGenerator(s.seed)
        self.painter = PAINTERS[s.back](self)   # (a plain object: checkpoints keep its variables here)
        self.ce_mean, self.adv_mean = keras.metrics.Mean(name='ce'), keras.metrics.Mean(name='adv_loss')

    def compile(self, optimizer, gen_optimizer=None, **kw):
        super().compile(optimizer=optimizer, **kw)
        self.gen_optimizer = gen_optimizer
        if gen_optimizer is not None and self.gen is not None:
            # now, under the caller's strategy scope: Keras builds only the main optimiser
            # itself, and an optimiser built inside a distributed step fails
            gen_optimizer.build(self.gen.trainable_variables)

    def call(self, X, training=False):
        return self.classifier(X, training=training)

    def build_all(self, X):
        """Build the model and the optimisers' slots (so a checkpoint can be loaded into them)."""
        self(X)
        if self.gen is not None:
            self.gen(keras.ops.zeros((1, noise_size(self.gen))))
        self.optimizer.build(self.classifier.trainable_variables)

    @property
    def metrics(self):
        return [self.ce_mean, self.adv_mean]

    # -- the batches ----------------------------------------------------------------------------

    def draws(self):
        """{part: (shape per image, 'normal' or 'uniform')}: the random inputs a step needs."""
        out = dict(self.painter.draws())
        if self.clean_share > 0 or self.replay > 0:
            out['share'] = ((), 'uniform')
        if self.binarize_mode == 'jitter':
            out['cut'] = ((), 'uniform')
        if self.back_flip:
            out['mirror'] = ((), 'uniform')
        if self.back_shuffle:
            out['shuffle'] = ((), 'uniform')
        return out

    def batches(self, ds, batch_size, seed=0, start_step=0, part=None, crops=None):
        """The named batches of phase 3 from mydatagen.batches() (images, [masks], labels): the
        random draws added (seeded; a run resumed at step `start_step` draws what the uninterrupted
        run drew), and with back=real a crop of `crops` (an endless generator of (H, W, C) arrays)
        per image. part=(lo, hi, batch size): one replica's rows (mydatagen.distribute)."""
        names = ('image', 'mask', 'label') if self.given_masks else ('image', 'label')
        ds = ds.map(lambda *t: dict(zip(names, t)))
        if crops is not None:
            ds = mydatagen.with_crops(ds, crops, batch_size, part)
        spec = {k: (shape, kind, DRAW_STREAMS[k]) for k, (shape, kind) in self.draws().items()}
        return mydatagen.with_draws(ds, spec, seed, start_step, part)

    # -- the step -------------------------------------------------------------------------------

    def painted_part(self, batch):
        """(rows, part): with a clean share, the rows of the images that get a painted background
        and their parts (gathered), which saves most of a step's work on the images that keep
        their own; the images trained on and both players' gradients are those of painting them
        all and discarding. A batch where every image keeps its own paints one, discarded:
        oneDNN's convolutions fail on an empty batch. Without a clean share: (None, batch). The
        part's 'row': each of its images' row in the batch."""
        if 'share' not in batch:
            return None, batch
        rows = tf.where(batch['share'] >= self.clean_share)[:, 0]
        painted = tf.concat([rows, tf.zeros([1], rows.dtype)], 0)[:tf.maximum(tf.size(rows), 1)]
        return rows, {'row': painted, **{k: tf.gather(v, painted) for k, v in batch.items() if k in PER_IMAGE}}

    def train_step(self, batch):
        X, Y = batch['image'], batch['label']
        rows, part = self.painted_part(batch)
        if rows is not None and self.clean_back == 'black':   # every image is shown through its mask: one pass
            M_all, _ = self.masks(X, batch.get('mask'), batch.get('cut'))
            M, clean = tf.gather(M_all, part['row']), X * M_all   # the clean share alone on black
        else:
            M, _ = self.masks(part['image'], part.get('mask'), part.get('cut'))
            clean = X   # the clean share with its own background
        with tf.GradientTape(persistent=True) as tape:
            # the backgrounds of the painted images, and those the generator painted in this step
            B, fresh, drawn = self.painter.paint(part, None if rows is None else tf.size(rows))
            Z = self.composite(part['image'], M, B)
            if rows is not None:   # the others: the clean share
                Z = tf.tensor_scatter_nd_update(clean, rows[:, None], Z[:tf.size(rows)])
            ce = _ce(Y, self.classifier(Z, training=True))
            adv = self.painter.loss(ce, fresh)
            # the generator's loss with the classifier's part held: its gradient is the penalty's
            held = replica_mean(self.painter.loss(tf.stop_gradient(ce), fresh))
            scaled_ce = replica_mean(ce)   # inside the tape
        variables = self.classifier.trainable_variables
        grads, gen_grads = self.painter.gradients(tape, scaled_ce, held, variables, drawn)
        self.optimizer.apply(grads, variables)
        self.painter.learn(gen_grads, fresh)
        del tape
        self.average.update()
        self.ce_mean.update_state(ce)
        self.adv_mean.update_state(adv)
        return {'ce': self.ce_mean.result(), 'adv_loss': self.adv_mean.result()}

    def composite(self, X, M, B):
        return X * M + B * (1 - M)

    def masks(self, X, given=None, u=None):
        """(binarized masks, soft masks) of the images X: those the batch carries (`given`: the
        data set's own, or the U-Net's computed once, augmented with their images), X > 0, or the
        U-Nets'; several U-Nets take the images in turn (image i U-Net i mod k), so that the
        classifier learns from composites of both kinds, e.g. loose masks and tight ones."""
        if given is not None:
            soft = given
        elif self.mask_source == 'heuristic':
            soft = tf.cast(X > 0, tf.float32)
        else:
            soft = _soft_masks([self.unet] + list(self.more_unets), X)
        return tf.stop_gradient(binarize(soft, self.binarize_mode, self.area, u)), soft


class WeightAverage:
    """--average N: a moving average, momentum 1 - 1/N, of the classifier's weights after each
    step, from its starting weights (N = 0: none; the classifier's own weights are reported). Its
    variables are the trainer's own (made by it, in this order), so checkpoints keep them."""

    def __init__(self, trainer, classifier, n):
        self.classifier, self.n, self.slots = classifier, n, []
        if n:   # the replicas hold the same weights after each update: the first one's average is everyone's
            self.slots = [trainer.add_weight(shape=w.shape, initializer='zeros', trainable=False,
                                             aggregation='only_first_replica', name=f'average_{i}')
                          for i, w in enumerate(classifier.weights)]
            for a, w in zip(self.slots, classifier.weights):
                a.assign(w)

    def update(self):
        m = 1.0 - 1.0 / max(self.n, 1)
        for a, w in zip(self.slots, self.classifier.weights):
            a.assign(m * a + (1.0 - m) * w)

    @contextlib.contextmanager
    def averaged(self):
        """Within it the classifier holds the averaged weights (N = 0: its own)."""
        raw = [w.numpy() for w in self.classifier.weights] if self.slots else None
        self.adopt()
        try:
            yield
        finally:
            if raw is not None:
                self.classifier.set_weights(raw)

    def adopt(self):
        """The classifier takes the averaged weights for good (N = 0: nothing changes)."""
        if self.slots:
            self.classifier.set_weights([a.numpy() for a in self.slots])


def _soft_masks(unets, X):
    """The soft masks of the images X from one U-Net, or from several in turn (one forward pass
    of each over its share)."""
    if len(unets) == 1:
        return unets[0](X, training=False)
    rows = tf.range(tf.shape(X)[0])
    which = rows % len(unets)
    parts, where = tf.dynamic_partition(X, which, len(unets)), tf.dynamic_partition(rows, which, len(unets))
    softs = []
    for unet, x in zip(unets, parts):
        # an empty share is given one image (and its mask dropped): convolutions on 0 images fail on CPU
        m = tf.shape(x)[0]
        padded = tf.concat([x, X[:1]], 0)[:tf.maximum(m, 1)]
        softs.append(tf.cast(unet(padded, training=False), tf.float32)[:m])
    return tf.dynamic_stitch(where, softs)


# The painters: one per kind of background, chosen once by the trainer. paint(part, n) gives the
# backgrounds of the painted images, those the generator painted in this step (n: how many of the
# part's rows are real, None for all) and the generator's own output; loss(ce, fresh) the
# generator's loss; gradients() both players' gradients; learn() the generator's update.

class Black:
    """back=black: nothing behind the object."""

    def __init__(self, trainer):
        self.trainer = trainer

    def draws(self):
        return {}

    def paint(self, part, n):
        return tf.zeros_like(part['image']), None, None

    def picture(self, X):
        return np.zeros_like(X)

    def loss(self, ce, fresh):
        return tf.zeros_like(ce)

    def gradients(self, tape, ce, held, variables, drawn):
        """(the classifier's gradients, the generator's or None) from the tape of a step: ce its
        scaled loss, held the generator's scaled loss with the classifier's part held fixed,
        drawn the generator's output (paint()'s third value)."""
        return tape.gradient(ce, variables), None

    def learn(self, grads, fresh):
        pass


class Given(Black):
    """back=real: a photograph's crop per image, given with the batch (pictures show black)."""

    def paint(self, part, n):
        return part['background'], None, None


class Noise(Given):
    """back=noise: standard normal noise per pixel, drawn in the pipeline."""

    def draws(self):
        return {'background': (tuple(self.trainer.classifier.input_shape[1:]), 'normal')}

    def picture(self, X):
        return keras.random.normal(X.shape, seed=self.trainer.seeds)


class Painted(Black):
    """back=adv: tiles x tiles generator draws per image, each from its own normal noise; with
    replay some images take a background from the pool of past ones instead; with back_flip some
    are mirrored, with back_shuffle some have their colour channels put in another of the six orders.
    The generator maximises the classifier's loss, plus, for 1-channel images (with dim='all' for
    every image), relu(mean(B) - 0.5), which keeps the backgrounds from going all white; dim='cap'
    instead bounds each pixel (tiles())."""

    def draws(self):
        t = self.trainer
        return {'noise': ((t.tiles * t.tiles, noise_size(t.gen)), 'normal')}

    def tiles(self, z, training=True):
        """Backgrounds from noise z (n, tiles^2, noise size): one generator call, the tiles
        assembled into full images."""
        return self.assembled(self.generated(z, training), tf.shape(z)[0])

    def generated(self, z, training=True):
        """The generator's own output for noise z: (n * tiles^2, tile height, tile width, C)."""
        return self.trainer.gen(tf.reshape(z, [-1, z.shape[-1]]), training=training)

    def assembled(self, tiles, n):
        """The generator's tiles put together into n full backgrounds."""
        t = self.trainer.tiles
        th, tw, C = tiles.shape[1:]
        B = tf.reshape(tiles, [n, t, t, th, tw, C])                        # (n, row, col, ...)
        B = tf.reshape(tf.transpose(B, [0, 1, 3, 2, 4, 5]), [n, t * th, t * tw, C])
        if self.trainer.dim == 'cap':   # no pixel lighter than mid-grey in every channel: a white object stays visible
            B -= tf.nn.relu(tf.reduce_min(B, axis=-1, keepdims=True) - 0.5)
        return B

    def picture(self, X):   # pictures only: the noise drawn here
        t = self.trainer
        return self.tiles(keras.random.normal([len(X), t.tiles ** 2, noise_size(t.gen)], seed=t.seeds), False)

    def paint(self, part, n):
        t = self.trainer
        if t.replay:   # the generator paints the fresh ones; the others come from the pool
            fresh_rows = tf.where((part['share'] >= t.clean_share + t.replay) | t.past.empty())[:, 0]
            old = t.past.draw(tf.shape(part['share'])[0])
            nf = tf.size(fresh_rows)
            z = tf.gather(part['noise'], tf.concat([fresh_rows, tf.zeros([1], fresh_rows.dtype)], 0)[:tf.maximum(nf, 1)])
            drawn = self.generated(z)
            fresh = self.assembled(drawn, tf.shape(z)[0])[:nf]
            B = tf.tensor_scatter_nd_update(old, fresh_rows[:, None], fresh)
        else:
            drawn = self.generated(part['noise'])
            B = fresh = self.assembled(drawn, tf.shape(part['noise'])[0])
        if 'mirror' in part:   # (the brightness penalty is the same either way)
            B = tf.where((part['mirror'] < t.back_flip)[:, None, None, None], tf.reverse(B, [2]), B)
        if 'shuffle' in part:   # u < P: the order floor(6 u / P) (u / P is uniform too); else as painted
            u = part['shuffle']
            order = tf.gather(tf.constant(CHANNEL_ORDERS), tf.minimum(tf.cast(6 * u / t.back_shuffle, tf.int32), 5))
            B = tf.where((u < t.back_shuffle)[:, None, None, None], tf.gather(B, order, axis=3, batch_dims=1), B)
        if not t.replay:   # every one is fresh, as shown (but the padding image of an all-clean batch)
            fresh = B if n is None else B[:n]
        return B, fresh, drawn

    def loss(self, ce, fresh):
        adv = -ce
        if fresh.shape[-1] == 1 or self.trainer.dim == 'all':
            # the mean is over every background painted in the global batch (all replicas), as on one device
            ctx = tf.distribute.get_replica_context()
            total = ctx.all_reduce('SUM', tf.stack([tf.reduce_sum(fresh), tf.cast(tf.size(fresh), fresh.dtype)]))
            adv += tf.nn.relu(tf.math.divide_no_nan(total[0], total[1]) - 0.5)
        return adv

    def gradients(self, tape, ce, held, variables, drawn):
        """One backward pass through the classifier gives both players' gradients: its loss's
        gradient with respect to the generator's output, negated, is the generator's loss's (less
        the penalty's, added from `held`), 1.7 ms of a 10-ms step saved against differentiating
        the generator's loss through the classifier again. The same numbers to the bit: negation
        is exact, and the two parts are added where the generator's output is only moved about
        (reshaped, mirrored, gathered) between here and where they meet."""
        *grads, out = tape.gradient(ce, list(variables) + [drawn])
        out = -out
        penalty = tape.gradient(held, drawn)
        if penalty is not None:
            out += penalty
        return grads, tape.gradient(drawn, self.trainer.gen.trainable_variables, output_gradients=out)

    def learn(self, grads, fresh):
        t = self.trainer
        t.gen_optimizer.apply(grads, t.gen.trainable_variables)
        if t.replay:
            t.past.remember(tf.stop_gradient(fresh))

    def restart(self, round_):
        """The generator takes new random weights (its layers' own initialisers, seeded by the run's
        seed and the round) and its optimiser forgets its moments. The optimiser's step count stays:
        the learning-rate schedule spans the whole run."""
        t = self.trainer
        for i, layer in enumerate(t.gen.layers):
            for name in ('kernel', 'bias'):
                init, var = getattr(layer, f'{name}_initializer', None), getattr(layer, name, None)
                if init is None or var is None:
                    continue
                config = init.get_config()
                if 'seed' in config:
                    config['seed'] = (t.seed * 1009 + int(round_)) * 131 + i
                var.assign(type(init).from_config(config)(var.shape))
        for v in t.gen_optimizer.variables:
            if len(v.shape):   # the moments; the scalars are the step count (and a constant rate)
                v.assign(keras.ops.zeros(v.shape, v.dtype))


PAINTERS = {'black': Black, 'noise': Noise, 'adv': Painted, 'real': Given}


class FreshGenerators(keras.callbacks.Callback):
    """Phase 3 --generators K: before the first step of each K-th of the run (every
    trainer.generator_every steps), a fresh generator (Painted.restart). Checked at each graph
    call's start, so a new generator starts at the first call from its step on."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_train_batch_begin(self, batch, logs=None):
        t = self.trainer
        due = int(t.optimizer.iterations.numpy()) // t.generator_every
        if due > int(t.generator_round.numpy()):
            t.painter.restart(due)
            t.generator_round.assign(due)


class PastBackgrounds(keras.layers.Layer):
    """Phase 3's --replay: a uniform sample of `size` of all the backgrounds the generator has
    painted (reservoir sampling), kept with the trainer's weights (checkpoints hold it). With
    several replicas they all read one pool, to which the first replica's backgrounds go."""

    def __init__(self, size, shape, **kw):
        super().__init__(**kw)
        self.pool = self.add_weight(shape=(int(size),) + tuple(shape), initializer='zeros', trainable=False,
                                    aggregation='only_first_replica', name='pool')
        self.seen = self.add_weight(shape=(), initializer='zeros', dtype='int64', trainable=False,
                                    aggregation='only_first_replica', name='seen')
        self.built = True   # its state is made here, not in build()

    def empty(self):
        return tf.convert_to_tensor(self.seen) == 0

    def draw(self, n):
        """n backgrounds drawn from the pool (uniformly, with replacement; seeded by the count)."""
        seen = tf.convert_to_tensor(self.seen)
        r = tf.random.stateless_uniform([n], tf.stack([seen, tf.constant(7, tf.int64)]))
        have = tf.maximum(tf.minimum(seen, self.pool.shape[0]), 1)
        # gathered from the variable itself (ResourceGather): once a variable is updated in place
        # TensorFlow copies the whole of it at every plain read, 16 MB and 1 ms of a 10-ms step
        return tf.gather(self.pool.value, tf.cast(tf.floor(r * tf.cast(have, tf.float32)), tf.int64))

    def remember(self, B):
        """The k-th background painted (k from 0) takes slot k while the pool has room, then
        replaces a random slot with probability N / (k + 1): the pool stays a uniform sample of
        every background painted so far."""
        N, seen = self.pool.shape[0], tf.convert_to_tensor(self.seen)
        k = seen + tf.range(tf.shape(B)[0], dtype=tf.int64)
        r = tf.random.stateless_uniform(tf.shape(k), tf.stack([seen, tf.constant(11, tf.int64)]))
        slot = tf.where(k < N, k, tf.cast(tf.floor(r * tf.cast(k + 1, tf.float32)), tf.int64))
        keep = tf.where(slot < N)[:, 0]
        where, what = tf.gather(slot, keep)[:, None], tf.gather(B, keep)
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            # a mirrored variable takes only whole assignments in a replica: the first replica's
            # is everyone's, so the pool holds the backgrounds the first replica painted
            self.pool.assign(tf.tensor_scatter_nd_update(self.pool.value, where, what))
        else:   # in place: the pool is not copied at every step
            self.pool.value.scatter_nd_update(where, what)
        self.seen.assign_add(tf.cast(tf.shape(B)[0], tf.int64))


class CompositePictures(keras.callbacks.Callback):
    """Phase 3 --imsave: per epoch and test set one PNG, DIR/epoch-NNN-SET.png, rows: the
    images, their soft masks, binarized masks, and the composites the classifier is trained on.
    sets: (name, images, their given masks or None)."""

    def __init__(self, trainer, sets, directory):
        super().__init__()
        self.trainer, self.sets, self.directory = trainer, sets, directory

    def on_epoch_end(self, epoch, logs=None):
        t = self.trainer
        os.makedirs(self.directory, exist_ok=True)
        for name, X, given in self.sets:
            hard, soft = t.masks(X, None if given is None else tf.cast(given, tf.float32))
            B = t.painter.picture(X)
            Z = np.clip(t.composite(X, hard, B).numpy(), 0, 1)
            rows = [list(X), list(_gray_to(np.asarray(soft), X)), list(_gray_to(hard.numpy(), X)), list(Z)]
            save_png(os.path.join(self.directory, f'epoch-{epoch + 1:03d}-{name}.png'),
                     montage(rows, invert_gray=False))
