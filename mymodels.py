"""The four networks of the paper (see SPEC.md, "Architectures"), Keras 3, 'same' padding.

    classifier(shape, K)  small VGG-style classifier for images < 128 px      Adam 1e-3
    vgg19(shape, K)       ImageNet VGG19 + two Dense 4096 for images >= 128 px  Adam 1e-5
    unet(shape)           mask generator, sigmoid mask of shape (H, W, 1)      Adam 1e-5
    gen(shape, tiles)     background generator, noise -> one tile               Adam 1e-5

Every model saves to .keras (and .h5) and loads back with keras.models.load_model(path); the
only custom layer (VGG19's input preprocessing) is registered, so importing this module is all
that loading needs. `load(path, expect=...)` is the scripts' loader: it also reads the Keras 2
.h5 files of the published code and says in one line what is wrong with a file that does not fit.
"""
import contextlib
import math
import os
import tempfile

from mydatasets import UserError, quiet_tensorflow

quiet_tensorflow()
import keras  # noqa: E402
from keras import layers  # noqa: E402

LEARNING_RATE = {'classifier': 1e-3, 'vgg19': 1e-5, 'unet': 1e-5, 'gen': 1e-5}
# training steps per call into the TensorFlow graph: at batch size 8 a step is a few milliseconds,
# and Keras' per-call Python work would otherwise cost as much again (benchmark.py measures it)
STEPS_PER_EXECUTION = 32
VGG_MEAN_BGR = [103.939, 116.779, 123.68]
BIG = 128   # images this high or more use vgg19


class ModelError(UserError):
    """A model cannot be built or loaded; the message is one line meant for the user."""


def steps_per_execution(steps_per_epoch=None):
    """Training steps per graph call: the largest divisor of steps_per_epoch up to
    STEPS_PER_EXECUTION, because Keras runs whole graph calls, so that 16 steps an epoch at 32
    steps a call would silently train 32. 1 with several replicas, where Keras 3's multi-step
    loop fails under tf.distribute ("You must feed a value for placeholder tensor", Keras issue
    19246), and where the devices are big enough for the per-call overhead not to matter."""
    import tensorflow as tf
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return 1
    if steps_per_epoch is None:
        return STEPS_PER_EXECUTION
    return max(d for d in range(1, STEPS_PER_EXECUTION + 1) if steps_per_epoch % d == 0)


def _log2_blocks(h):
    # n = log2(H/4) blocks (rounded down: 28 px gives 2 blocks, as in the published code)
    n = int(math.log2(h / 4))
    if n < 1:
        raise ModelError(f'images of height {h} are too small for this architecture (need >= 8)')
    return n


def adam(kind):
    return keras.optimizers.Adam(LEARNING_RATE[kind])


def learning_rate(lr, schedule='constant', total_steps=None):
    """A constant learning rate (the published setting), or a cosine decay from lr to 0 over
    the whole run (the fast recipe). The optimiser's step count is checkpointed, so a resumed
    run continues the same curve."""
    if schedule == 'constant':
        return lr
    if schedule == 'cosine':
        return keras.optimizers.schedules.CosineDecay(lr, total_steps)
    raise ValueError(f'unknown learning-rate schedule {schedule!r}')


def compile_classifier(model, lr, steps_per_epoch=None):
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'], steps_per_execution=steps_per_execution(steps_per_epoch))
    return model


def classifier(shape, K):
    """n = log2(H/4) blocks of Conv(2^(i+5), relu) + MaxPool 2; Flatten; Dense 128 relu; Dense K logits."""
    x = inp = keras.Input(shape, name='image')
    for i in range(_log2_blocks(shape[0])):
        x = layers.Conv2D(2 ** (i + 5), 3, padding='same', activation='relu')(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation='relu')(x)
    out = layers.Dense(K, name='logits')(x)
    return compile_classifier(keras.Model(inp, out, name='classifier'), LEARNING_RATE['classifier'])


@keras.saving.register_keras_serializable(package='bial')
class VGGPreprocess(layers.Layer):
    """[0, 1] RGB (or gray, repeated to 3 channels) -> what Keras' ImageNet VGG19 expects:
    channels reversed to BGR, x*255 minus the ImageNet mean of each channel."""

    def call(self, x):
        if x.shape[-1] == 1:
            x = keras.ops.repeat(x, 3, axis=-1)
        return x[..., ::-1] * 255.0 - keras.ops.convert_to_tensor(VGG_MEAN_BGR, x.dtype)


def vgg19(shape, K, weights='imagenet'):
    """Keras VGG19 without top (ImageNet weights unless weights=None), Flatten, Dense 4096 relu x2, Dense K."""
    inp = keras.Input(shape, name='image')
    x = VGGPreprocess(name='vgg_preprocess')(inp)
    try:
        base = keras.applications.VGG19(include_top=False, weights=weights, input_shape=shape[:2] + (3,))
    except Exception as e:   # a download that failed: urllib, OSError, ValueError... say it once
        raise ModelError(f'could not get the ImageNet weights of VGG19 ({type(e).__name__}: '
                         f'{str(e).splitlines()[0] if str(e) else ""}); use --weights none to start '
                         'from random weights')
    x = layers.Flatten()(base(x))
    x = layers.Dense(4096, activation='relu')(x)
    x = layers.Dense(4096, activation='relu')(x)
    out = layers.Dense(K, name='logits')(x)
    return compile_classifier(keras.Model(inp, out, name='vgg19_classifier'), LEARNING_RATE['vgg19'])


def classifier_kind(shape):
    """The paper's choice: the small classifier below 128 px, VGG19 from 128 px up."""
    return 'vgg19' if shape[0] >= BIG else 'classifier'


def build_classifier(shape, K, weights='imagenet'):
    return vgg19(shape, K, weights) if classifier_kind(shape) == 'vgg19' else classifier(shape, K)


def unet(shape):
    """U-Net: n = log2(H/4) down blocks Conv(2^(i+5)) kept as skip + MaxPool; bottom Conv(2^(n+4));
    up blocks (deepest first) UpSampling, Conv(2^(n-1-i+5)), Concatenate skip; 1x1 Conv sigmoid."""
    n = _log2_blocks(shape[0])
    x = inp = keras.Input(shape, name='image')
    skips = []
    for i in range(n):
        x = layers.Conv2D(2 ** (i + 5), 3, padding='same', activation='relu')(x)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(2 ** (n + 4), 3, padding='same', activation='relu')(x)
    for i in range(n):
        x = layers.UpSampling2D(2)(x)
        x = layers.Conv2D(2 ** (n - 1 - i + 5), 3, padding='same', activation='relu')(x)
        x = layers.Concatenate()([x, skips[n - 1 - i]])
    out = layers.Conv2D(1, 1, activation='sigmoid', name='mask')(x)
    return keras.Model(inp, out, name='unet')


def gen_geometry(shape, tiles):
    """(tile side, noise side d, upsamplings n) of the background generator, or ModelError."""
    H, W = shape[:2]
    if int(tiles) != tiles or tiles < 1:
        raise ModelError(f'the background generator cannot build images from {tiles} tiles: tiles must be >= 1')
    if H != W or H % (2 * tiles) or (H // (2 * tiles)) % 2:
        raise ModelError(f'the background generator cannot build {H}x{W} images from {tiles}x{tiles} '
                         f'tiles: it needs square images whose side divided by 2*tiles is even '
                         f'({H}/{2 * tiles} = {H / (2 * tiles):g})')
    tile = H // tiles
    t = (tile & -tile).bit_length() - 1          # times 2 divides the tile side
    d = max(tile // 2 ** t, 4)
    return tile, d, int(math.log2(tile // d))


def gen(shape, tiles=2):
    """Background generator for one tile of (H/tiles, W/tiles, C): normal noise of size d*d*C,
    reshaped (d, d, C); Conv(2^(n+5)) LeakyReLU 0.2; n x (UpSampling, Conv(2^(n-1-i+5)) LeakyReLU);
    1x1 Conv to C, sigmoid."""
    C = shape[2]
    tile, d, n = gen_geometry(shape, tiles)
    inp = keras.Input((d * d * C,), name='noise')
    x = layers.Reshape((d, d, C))(inp)
    x = layers.Conv2D(2 ** (n + 5), 3, padding='same')(x)
    x = layers.LeakyReLU(0.2)(x)
    for i in range(n):
        x = layers.UpSampling2D(2)(x)
        x = layers.Conv2D(2 ** (n - 1 - i + 5), 3, padding='same')(x)
        x = layers.LeakyReLU(0.2)(x)
    out = layers.Conv2D(C, 1, activation='sigmoid', name='background')(x)
    return keras.Model(inp, out, name='gen')


def noise_size(gen_model):
    return gen_model.input_shape[-1]


# ----------------------------------------------------------------------------------------------
# Saving and loading

def save(model, path):
    """model.save through a temporary file in the same folder, renamed when complete: an
    interrupted save never leaves a broken file under `path`."""
    d = os.path.dirname(os.path.abspath(path))
    ext = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.part' + ext, dir=d)
    os.close(fd)
    try:
        os.remove(tmp)   # Keras refuses some existing targets; it only needs the name
        model.save(tmp)
        fault('final-save')
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def kind_of(model):
    """'classifier', 'unet' or 'gen', from the model's inputs and outputs."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return 'unknown'
    ins, outs = model.input_shape, model.output_shape
    if len(ins) == 2 and len(outs) == 4:
        return 'gen'
    if len(ins) == 4 and len(outs) == 4 and outs[-1] == 1:
        return 'unet'
    if len(ins) == 4 and len(outs) == 2:
        return 'classifier'
    return 'unknown'


def load(path, expect=None, shape=None, classes=None):
    """Load a .keras file, or a .h5 file (this project's or the published code's Keras 2 ones),
    without compiling; check it is a `expect` model taking images of `shape` with `classes`
    outputs. Raises ModelError with a one-line reason."""
    if not os.path.isfile(path):
        raise ModelError(f'model file {path} does not exist')
    if not os.access(path, os.R_OK):
        raise ModelError(f'model file {path} is not readable')
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        model = _load_published_h5(path) if path.endswith('.h5') else None
        if model is None:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f'cannot load model {path}: {msg[:300]}')
    kind = kind_of(model)
    if expect and kind != expect:
        names = {'classifier': 'a classifier (phase 1 or 3)', 'unet': 'a mask generator (phase 2)',
                 'gen': 'a background generator'}
        raise ModelError(f'{path} is {names.get(kind, "not a model of this project")}, '
                         f'but {names[expect]} is expected here')
    if shape is not None and tuple(model.input_shape[1:]) != tuple(shape):
        raise ModelError(f'{path} takes images of shape {tuple(model.input_shape[1:])}, '
                         f'but the data set has {tuple(shape)}')
    if classes is not None and model.output_shape[-1] != classes:
        raise ModelError(f'{path} has {model.output_shape[-1]} outputs, but the data set has {classes} classes')
    return model


def _load_published_h5(path):
    """A Keras 2 .h5 of the published code that Keras 3 cannot rebuild from its config (its
    VGG19 starts with Python lambdas; its generator passes a LeakyReLU layer as an activation):
    read the architecture's kind and sizes from the stored config, build the same network here
    and load the stored weights into it, layer by layer in order. None if it is not one of ours."""
    import json
    import h5py
    try:
        with h5py.File(path, 'r') as f:
            config = f.attrs.get('model_config')
        config = json.loads(config.decode() if isinstance(config, bytes) else config)['config']
        layers_ = config['layers']
        shape = tuple(layers_[0]['config'].get('batch_input_shape') or layers_[0]['config']['batch_shape'])[1:]
        classes = [l['class_name'] for l in layers_]
        last = layers_[-1]['config']
        if len(shape) == 1:   # noise in: the background generator
            side = int(round((shape[0] / last['filters']) ** 0.5))
            out_side = side * 2 ** classes.count('UpSampling2D')
            model = gen((out_side, out_side, last['filters']), 1)
        elif 'Concatenate' in classes:
            model = unet(shape)
        elif 'Functional' in classes or 'Model' in classes or 'Lambda' in classes:
            model = vgg19(shape, last['units'], weights=None)
        else:
            model = classifier(shape, last['units'])
        model.load_weights(path)
        return model
    except Exception:
        return None


# ----------------------------------------------------------------------------------------------
# Masks: binarized per image, inside the graph

BINARIZE = ['otsu', '0.5', 'quantile', 'none']


def otsu_threshold(M, nbins=256):
    """Per-image Otsu threshold of a batch (n, ...), computed as skimage.filters.threshold_otsu
    does: a 256-bin histogram over the image's own [min, max] (numpy's bin edges, float32), the
    bin centre that maximises the between-class variance; a constant image gives its value."""
    import tensorflow as tf
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
    import tensorflow as tf
    v = tf.sort(tf.reshape(tf.cast(M, tf.float32), [tf.shape(M)[0], -1]), 1)
    pos = q * tf.cast(tf.shape(v)[1] - 1, tf.float32)
    i = tf.cast(tf.floor(pos), tf.int32)
    j = tf.minimum(i + 1, tf.shape(v)[1] - 1)
    return v[:, i] + (v[:, j] - v[:, i]) * (pos - tf.cast(i, tf.float32))


def binarize(M, mode, area=0.2):
    """Soft masks (n, H, W, C) -> per-image binary masks (float 0/1), or the soft mask for 'none'."""
    import tensorflow as tf
    M = tf.cast(M, tf.float32)
    if mode == 'none':
        return M
    if mode == '0.5':
        t = tf.fill([tf.shape(M)[0]], 0.5)
    elif mode == 'otsu':
        t = otsu_threshold(M)
    elif mode == 'quantile':
        t = quantile(M, 1 - area)
    else:
        raise ValueError(f'unknown binarize mode {mode!r}; one of {", ".join(BINARIZE)}')
    return tf.cast(M >= t[:, None, None, None], tf.float32)


# ----------------------------------------------------------------------------------------------
# Phase 2 and phase 3 as Keras models with their own train_step: fit() drives them

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

    def compile(self, optimizer, steps_per_epoch=None, **kw):
        kw.setdefault('steps_per_execution', steps_per_execution(steps_per_epoch))
        super().compile(optimizer=optimizer, **kw)

    def call(self, X, training=False):
        return self.unet(X, training=training)

    @property
    def metrics(self):
        return [self.ce_mean, self.loss_mean]

    def train_step(self, data):
        import tensorflow as tf
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


BACKS = ['black', 'noise', 'adv', 'real']


class BackgroundTrainer(keras.Model):
    """Phase 3: the classifier learns on Z = X*M + B*(1-M) while, with back='adv', the generator
    paints the backgrounds B that maximise the classifier's loss. The mask M is computed on the
    very (augmented) image that is trained on. masks: a U-Net, 'heuristic' (X > 0) or 'manual'
    (given with each batch). Backgrounds 'real' come with each batch too, and so does the random
    noise of 'adv' and 'noise' (see with_noise): a batch is (X, [masks], [backgrounds], [noise], Y).
    Drawing the noise in the input pipeline, per image, makes a step the same whether one device
    or several replicas share the batch.

    Two additions to the published method, both off by default (the fast recipe uses them, see the
    README): clean_share, the share of images trained on as they are, with their own background
    (drawn per image in the pipeline too: a uniform number comes with each batch after the noise);
    average=N, an exponential moving average of the classifier's weights over about the last N
    steps (momentum 1 - 1/N), which is what is evaluated after each epoch and saved at the end."""

    def __init__(self, classifier, masks='heuristic', binarize_mode='otsu', back='adv', gen=None, tiles=2,
                 area=0.2, seed=None, clean_share=0.0, average=0, **kw):
        super().__init__(**kw)
        self.classifier, self.back, self.gen, self.tiles = classifier, back, gen, tiles
        self.clean_share, self.average, self._average = float(clean_share), int(average), []
        if self.average:
            # the replicas hold the same weights after each update, so the first one's average is
            # everyone's; these are the trainer's own weights, so checkpoints keep them
            self._average = [self.add_weight(shape=w.shape, initializer='zeros', trainable=False,
                                             aggregation='only_first_replica', name=f'average_{i}')
                             for i, w in enumerate(classifier.weights)]
            for a, w in zip(self._average, classifier.weights):
                a.assign(w)
        self.unet = masks if isinstance(masks, keras.Model) else None
        if self.unet is not None:
            self.unet.trainable = False
        self.mask_source = 'unet' if self.unet is not None else masks
        self.binarize_mode, self.area = binarize_mode, area
        self.seeds = keras.random.SeedGenerator(seed)
        self.ce_mean, self.adv_mean = keras.metrics.Mean(name='ce'), keras.metrics.Mean(name='adv_loss')

    def compile(self, optimizer, gen_optimizer=None, steps_per_epoch=None, **kw):
        kw.setdefault('steps_per_execution', steps_per_execution(steps_per_epoch))
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

    @contextlib.contextmanager
    def averaged(self):
        """Within it the classifier holds the averaged weights (average=N; otherwise its own)."""
        raw = [w.numpy() for w in self.classifier.weights] if self._average else None
        self.adopt_average()
        try:
            yield
        finally:
            if raw is not None:
                self.classifier.set_weights(raw)

    def adopt_average(self):
        """The classifier takes the averaged weights (average=N; otherwise nothing changes)."""
        if self._average:
            self.classifier.set_weights([a.numpy() for a in self._average])

    @property
    def metrics(self):
        return [self.ce_mean, self.adv_mean]

    def masks(self, X, given=None):
        import tensorflow as tf
        if self.mask_source == 'manual':
            soft = given
        elif self.mask_source == 'heuristic':
            soft = tf.cast(X > 0, tf.float32)
        else:
            soft = self.unet(X, training=False)
        return tf.stop_gradient(binarize(soft, self.binarize_mode, self.area)), soft

    @property
    def noise_shape(self):
        """The random input each image needs per step: one noise vector per tile (adv), or an
        image of standard normal noise (noise); None for the other backgrounds."""
        if self.back == 'adv':
            return (self.tiles * self.tiles, noise_size(self.gen))
        if self.back == 'noise':
            return tuple(self.classifier.input_shape[1:])
        return None

    def with_noise(self, ds, seed=0, start_step=0, part=None):
        """Add the per-image random inputs this trainer needs to a dataset of batches (before the
        labels): the noise (noise_shape), then with clean_share a uniform number per image.
        start_step: the training steps already done (a resumed run)."""
        import mydatagen
        if self.noise_shape is not None:
            ds = mydatagen.with_noise(ds, self.noise_shape, seed, start_step, part)
        if self.clean_share > 0:
            ds = mydatagen.with_noise(ds, (), seed, start_step, part, uniform=True)
        return ds

    def adversarial_backgrounds(self, n=None, training=True, z=None):
        """tiles x tiles independent generator draws, each from its own normal noise z (n, tiles^2,
        noise size; drawn here when not given), assembled into full images; one generator call."""
        import tensorflow as tf
        t = self.tiles
        if z is None:
            z = keras.random.normal([n, t * t, noise_size(self.gen)], seed=self.seeds)
        n = tf.shape(z)[0]
        tiles = self.gen(tf.reshape(z, [-1, z.shape[-1]]), training=training)   # (n*t*t, th, tw, C)
        th, tw, C = tiles.shape[1:]
        B = tf.reshape(tiles, [n, t, t, th, tw, C])                             # (n, row, col, ...)
        return tf.reshape(tf.transpose(B, [0, 1, 3, 2, 4, 5]), [n, t * th, t * tw, C])

    def composite(self, X, M, B):
        return X * M + B * (1 - M)

    def train_step(self, data):
        import tensorflow as tf
        X, *extra, Y = data   # (X, [masks], [backgrounds], [noise], [uniform], Y)
        wanted = [self.mask_source == 'manual', self.back == 'real', self.noise_shape is not None, self.clean_share > 0]
        if len(extra) != sum(wanted):
            raise ValueError(f'phase 3 with back={self.back!r}, masks={self.mask_source!r} takes batches of '
                             f'{2 + sum(wanted)} tensors, got {2 + len(extra)} (add the noise with with_noise())')
        given_masks, B, z, u = [extra.pop(0) if w else None for w in wanted]
        if self.back == 'noise':
            B = z
        # with clean_share, only the other images get a mask and a painted background (gathered),
        # which saves most of a step's work on the images that keep their own; the images trained
        # on, and both players' gradients, are those of painting them all and discarding. A batch
        # where every image keeps its own paints one, discarded: oneDNN's convolutions fail on an
        # empty batch.
        Xb, rows = X, None
        if u is not None:
            rows = tf.where(u >= self.clean_share)[:, 0]
            n = tf.size(rows)
            painted = tf.concat([rows, tf.zeros([1], rows.dtype)], 0)[:tf.maximum(n, 1)]
            Xb, given_masks, B, z = [None if t is None else tf.gather(t, painted) for t in (X, given_masks, B, z)]
        M, _ = self.masks(Xb, given_masks)
        with tf.GradientTape(persistent=True) as tape:
            if self.back == 'adv':
                B = self.adversarial_backgrounds(training=True, z=z)
            elif self.back == 'black':
                B = tf.zeros_like(Xb)
            Z = self.composite(Xb, M, B)
            if rows is not None:   # the others keep their own background
                B = B[:n]
                Z = tf.tensor_scatter_nd_update(X, rows[:, None], Z[:n])
            ce = _ce(Y, self.classifier(Z, training=True))
            adv = -ce
            if self.back == 'adv' and X.shape[-1] == 1:
                # keeps 1-channel backgrounds from going all white; the mean is over every
                # background painted in the global batch (all replicas), as on one device
                ctx = tf.distribute.get_replica_context()
                total = ctx.all_reduce('SUM', tf.stack([tf.reduce_sum(B), tf.cast(tf.size(B), B.dtype)]))
                adv += tf.nn.relu(tf.math.divide_no_nan(total[0], total[1]) - 0.5)
            scaled_ce, scaled_adv = replica_mean(ce), replica_mean(adv)   # inside the tape
        variables = self.classifier.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_ce, variables), variables)
        if self.back == 'adv':
            variables = self.gen.trainable_variables
            self.gen_optimizer.apply(tape.gradient(scaled_adv, variables), variables)
        else:
            adv = tf.zeros_like(ce)
        del tape
        if self._average:
            m = 1.0 - 1.0 / self.average
            for a, w in zip(self._average, self.classifier.weights):
                a.assign(m * a + (1.0 - m) * w)
        self.ce_mean.update_state(ce)
        self.adv_mean.update_state(adv)
        return {'ce': self.ce_mean.result(), 'adv_loss': self.adv_mean.result()}


# ----------------------------------------------------------------------------------------------
# Running a phase (shared by the scripts): arguments, evaluation, checkpoints and resume, errors

class Evaluator:
    """Accuracy of a classifier on named sets at a large batch size. The tf.data pipelines are
    built once, so the arrays are not copied again at every epoch, and each set is counted in one
    call into the graph (a loop over its batches there), not one Python round trip per batch."""

    def __init__(self, sets, batch_size=1024):
        import tensorflow as tf
        self.names = [n for n, _ in sets]
        self.data = {n: tf.data.Dataset.from_tensor_slices((X, Y.astype('int32'))).batch(batch_size).prefetch(2)
                     for n, (X, Y) in sets}
        self.sizes = {n: len(Y) for n, (_, Y) in sets}
        self._fns = {}

    def _counter(self, model):
        import tensorflow as tf
        if id(model) not in self._fns:
            @tf.function(reduce_retracing=True)
            def correct(ds):
                total = tf.constant(0, tf.int64)
                for x, y in ds:
                    pred = tf.argmax(model(x, training=False), -1, output_type=tf.int32)
                    total += tf.reduce_sum(tf.cast(pred == y, tf.int64))
                return total
            self._fns[id(model)] = correct
        return self._fns[id(model)]

    def __call__(self, model, names=None):
        correct = self._counter(model)
        return {n: float(correct(self.data[n])) / self.sizes[n] for n in names or self.names}


class EpochReport(keras.callbacks.Callback):
    """After each epoch: accuracy of `classifier` on the named sets (all by default), added to the
    epoch's logs, which fit's progress line and the CSV log show. `fixed`: numbers computed once
    (phase 2, whose classifier is frozen and whose accuracies cannot change). `weights`: a context
    in which the classifier holds the weights to report (phase 3's averaged ones)."""

    def __init__(self, evaluator, classifier, names=None, fixed=None, weights=contextlib.nullcontext):
        super().__init__()
        self.evaluator, self.classifier, self.names, self.fixed = evaluator, classifier, names, fixed
        self.weights = weights
        self.last = {}

    def on_epoch_end(self, epoch, logs=None):
        if self.fixed is not None:
            acc = self.fixed
        else:
            with self.weights():
                acc = self.evaluator(self.classifier, self.names)
        self.last = acc
        if logs is not None:   # fit's progress line and the CSV log show them from here
            logs.update({f'acc_{n}': a for n, a in acc.items()})


def fault(point, epoch=None):
    """Fault injection for the test suite: with BIAL_FAULT=POINT (or POINT@EPOCH) the process
    kills itself with SIGKILL when it reaches that point. Unset, this does nothing."""
    spec = os.environ.get('BIAL_FAULT')
    if spec:
        name, _, at = spec.partition('@')
        if name == point and (not at or epoch is None or int(at) == epoch):
            import signal
            os.kill(os.getpid(), signal.SIGKILL)


class GuardNaN(keras.callbacks.Callback):
    """Stop with a clear message when an epoch's loss is not finite, before that epoch is logged
    or checkpointed: the last good checkpoint stays. (BIAL_FAULT=nan@EPOCH poisons a weight at
    the start of that epoch, for the tests.)"""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_begin(self, epoch, logs=None):
        spec = os.environ.get('BIAL_FAULT', '')
        if spec == f'nan@{epoch + 1}':
            w = self.model.trainable_variables[0]
            w.assign(w * float('nan'))

    def on_epoch_end(self, epoch, logs=None):
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad:
            kept = f'the checkpoint of epoch {epoch} is kept in {self.directory}' if epoch else 'no epoch had finished'
            raise ModelError(f'the loss ({bad[0]}) became {float(logs[bad[0]])} during epoch {epoch + 1}; '
                             f'training stopped; {kept}; try a lower learning rate (--lr)')


class CSVLog(keras.callbacks.Callback):
    """One row per epoch (1-based) with every number of the epoch's logs, flushed at once.
    (Keras' CSVLogger adds empty val_* columns when there is no validation data.)"""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        import csv
        logs = logs or {}
        header = None
        if os.path.exists(self.path) and os.path.getsize(self.path):
            with open(self.path, newline='') as f:
                header = next(csv.reader(f), None)
        with open(self.path, 'a', newline='') as f:
            w = csv.writer(f)
            if not header:
                header = ['epoch'] + sorted(logs)
                w.writerow(header)
            w.writerow([epoch + 1] + [float(logs[k]) if k in logs else '' for k in header[1:]])
            f.flush()
            os.fsync(f.fileno())


class Checkpointer(keras.callbacks.Callback):
    """At each epoch's end: the whole training state (every model's weights, the optimisers, the
    random generator) and a copy of the CSV log, written into `DIR/epoch-NNNN.tmp/` and renamed
    to `DIR/epoch-NNNN/` once complete; older checkpoints are removed after. A kill at any moment
    leaves the previous complete checkpoint in place."""

    def __init__(self, directory, log_path, config):
        super().__init__()
        self.directory, self.log_path, self.config = directory, log_path, config

    def on_epoch_end(self, epoch, logs=None):
        import json
        import shutil
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f'epoch-{epoch + 1:04d}')
        tmp = final + '.tmp'
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self.model.save_weights(os.path.join(tmp, 'state.weights.h5'))
        fault('checkpoint-write', epoch + 1)
        if os.path.exists(self.log_path):
            shutil.copyfile(self.log_path, os.path.join(tmp, 'log.csv'))
        with open(os.path.join(tmp, 'meta.json'), 'w') as f:
            json.dump({'epoch': epoch + 1, 'config': self.config}, f)
        os.rename(tmp, final)
        fault('checkpoint-renamed', epoch + 1)
        for d in os.listdir(self.directory):
            if d.startswith('epoch-') and d != os.path.basename(final):
                shutil.rmtree(os.path.join(self.directory, d), ignore_errors=True)


class Run:
    """The files of one training run: the final model OUTPUT, its CSV log OUTPUT-log.csv and its
    checkpoints in OUTPUT-checkpoint/ (all beside OUTPUT). With several machines (multiworker),
    only the chief writes; the other workers only read a checkpoint to resume from."""

    def __init__(self, output, config, resume=False, chief=True):
        stem = os.path.splitext(output)[0]
        self.output, self.config, self.resume, self.chief = output, config, resume, chief
        # temporary files of saves that a kill interrupted (see save()): never a real file
        d, base = os.path.dirname(os.path.abspath(output)), os.path.basename(stem)
        for f in os.listdir(d) if chief else []:
            if f.startswith('.' + base) and '.part' in f:
                os.remove(os.path.join(d, f))
        self.log_path = stem + '-log.csv'
        self.directory = stem + '-checkpoint'
        import mydatasets
        mydatasets.INTERRUPT_HINT = self.directory

    def latest(self):
        import shutil
        if not os.path.isdir(self.directory):
            return None
        for d in os.listdir(self.directory) if self.chief else []:
            if d.endswith('.tmp'):   # a checkpoint whose writing was interrupted
                shutil.rmtree(os.path.join(self.directory, d), ignore_errors=True)
        done = sorted(d for d in os.listdir(self.directory) if d.startswith('epoch-') and not d.endswith('.tmp'))
        return os.path.join(self.directory, done[-1]) if done else None

    def restore(self, model):
        """With resume: load the latest checkpoint into `model` (built, optimisers built) and
        return the number of epochs it holds; else start over and return 0."""
        import json
        import shutil
        latest = self.latest()
        if not self.resume or latest is None:
            if self.resume:
                print('note: no checkpoint to resume from; starting from epoch 1', file=sys_stderr())
            if self.chief:
                shutil.rmtree(self.directory, ignore_errors=True)
                if os.path.exists(self.log_path):
                    os.remove(self.log_path)
            return 0
        state = os.path.join(latest, 'state.weights.h5')
        try:
            with open(os.path.join(latest, 'meta.json')) as f:
                meta = json.load(f)
            model.load_weights(state)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f'checkpoint {state} cannot be read ({msg[:200]}); run without --resume to start over')
        different = {k: (v, self.config.get(k)) for k, v in meta['config'].items() if self.config.get(k) != v}
        if different:
            k, (old, new) = next(iter(different.items()))
            raise ModelError(f'checkpoint {latest} was made with {k}={old}, not {new}; '
                             'use the same settings, or run without --resume to start over')
        log = os.path.join(latest, 'log.csv')
        if os.path.exists(log) and self.chief:
            shutil.copyfile(log, self.log_path)   # drops rows of an epoch that was not checkpointed
        print(f'resuming after epoch {meta["epoch"]} from {latest}', file=sys_stderr())
        return meta['epoch']

    def callbacks(self, report):
        if not self.chief:
            return [GuardNaN(self.directory), report]
        return [GuardNaN(self.directory), report, CSVLog(self.log_path),
                Checkpointer(self.directory, self.log_path, self.config)]

    def finish(self, accuracies, models):
        """The end of every phase: the published CSV line on stdout, each model saved atomically
        ({path: model}), then the checkpoint removed (a kill before that only means redoing this)."""
        import shutil
        import sys
        print(csv_line(accuracies.values()), flush=True)
        if not self.chief:
            print('not saved here: this worker is not the chief', file=sys.stderr)
            return
        for path, model in models.items():
            save(model, path)
        fault('before-finish')
        shutil.rmtree(self.directory, ignore_errors=True)
        print(f'saved {" and ".join(models)}', file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Several devices or machines: TensorFlow's distribution strategies (tf.distribute)

def make_strategy(name='default'):
    """default: one device. mirrored: every local GPU (without GPUs: every logical CPU device,
    one unless BIAL_CPU_DEVICES says more, see mydatasets.cpu_devices). multiworker: the
    machines named in TF_CONFIG, each with its local GPUs. Made before any other TensorFlow
    work, as multiworker requires."""
    import tensorflow as tf
    from mydatasets import STRATEGIES, is_cluster_chief
    if name not in STRATEGIES:
        raise UserError(f'unknown strategy {name!r}; choose one of {", ".join(STRATEGIES)}')
    if name == 'multiworker':
        is_cluster_chief()   # a one-line error for a missing or unusable TF_CONFIG
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        devices = tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU')
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return _multiworker_strategy()


def _multiworker_strategy():
    import tensorflow as tf

    class MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy as Keras 3's fit() calls it (Keras 3.15): fit reduces a
        whole (images, labels) batch in one call to learn its shapes, and each step's scalar
        logs with axis=0; this strategy's reduce takes one value at a time and no axis on a
        scalar. Both are done here as meant: element by element, scalars across replicas."""

        def reduce(self, reduce_op, value, axis):
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
                axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorker()


def is_chief(strategy):
    """Only the chief (worker 0 when TF_CONFIG names no chief) writes checkpoints and models."""
    return strategy.extended.should_checkpoint


def check_replicas(strategy, batch_size):
    """The global batch must split evenly across the replicas; says how it is split."""
    import sys
    import tensorflow as tf
    r = strategy.num_replicas_in_sync
    if batch_size % r:
        raise UserError(f'the batch size ({batch_size}) must be a multiple of the {r} replicas '
                        f'of the strategy: it is the global batch, split evenly across them')
    if strategy is not tf.distribute.get_strategy():
        print(f'{type(strategy).__name__}: {r} replica(s) in sync, {batch_size // r} images each per step',
              file=sys.stderr)


def replica_mean(loss):
    """A per-replica loss (a mean over the replica's share of the global batch) scaled so that
    the gradients the optimiser sums across replicas are those of the global batch mean."""
    import tensorflow as tf
    r = tf.distribute.get_strategy().num_replicas_in_sync
    return loss / r if r > 1 else loss


def sys_stderr():
    import sys
    return sys.stderr


def csv_line(accuracies):
    """The published scripts' result line: the command, then the accuracies, comma-separated."""
    import sys
    return ','.join(['-'.join([os.path.basename(sys.argv[0])] + sys.argv[1:])] + [str(a) for a in accuracies])


def fit_verbosity():
    import sys
    return 1 if sys.stdout.isatty() else 2


def setup(seed=None, strategy='default'):
    """Quiet TensorFlow, seeds everywhere (Python, numpy, TensorFlow) when given; returns the
    distribution strategy named (made first: multiworker must start before any TensorFlow work)."""
    import logging
    import warnings
    logging.getLogger('absl').setLevel(logging.ERROR)
    logging.getLogger('tensorflow').setLevel(logging.ERROR)   # retracing notes of short benchmark fits
    warnings.filterwarnings('ignore', message='You are saving your model as an HDF5 file')
    warnings.filterwarnings('ignore', message='Skipping variable loading for optimizer')
    strategy = make_strategy(strategy)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return strategy


class MaskPictures(keras.callbacks.Callback):
    """Phase 2 --debug: per epoch one PNG, DIR/masks-epoch-NNN.png: the images, their soft masks
    and their binarized masks (one row each)."""

    def __init__(self, unet, X, mode, area, directory):
        super().__init__()
        self.unet, self.X, self.mode, self.area, self.directory = unet, X, mode, area, directory

    def on_epoch_end(self, epoch, logs=None):
        import mydatasets
        soft = self.unet(self.X, training=False)
        hard = binarize(soft, self.mode, self.area)
        rows = [list(self.X), list(_gray_to(soft.numpy(), self.X)), list(_gray_to(hard.numpy(), self.X))]
        os.makedirs(self.directory, exist_ok=True)
        mydatasets.save_png(os.path.join(self.directory, f'masks-epoch-{epoch + 1:03d}.png'),
                            mydatasets.montage(rows, invert_gray=False))


def _gray_to(M, X):
    """Masks (n, H, W, 1) shown beside images with X's channel count."""
    import numpy as np
    return np.repeat(M, X.shape[-1], -1) if M.shape[-1] != X.shape[-1] else M


class CompositePictures(keras.callbacks.Callback):
    """Phase 3 --imsave: per epoch and test set one PNG, DIR/epoch-NNN-SET.png, rows: the
    images, their soft masks, binarized masks, and the composites the classifier is trained on."""

    def __init__(self, trainer, sets, directory, n=12):
        super().__init__()
        self.trainer, self.sets, self.directory, self.n = trainer, sets, directory, n

    def on_epoch_end(self, epoch, logs=None):
        import numpy as np
        import mydatasets
        t = self.trainer
        os.makedirs(self.directory, exist_ok=True)
        for name, X in self.sets:
            X = X[:self.n]
            hard, soft = t.masks(X)
            if t.back == 'adv':
                B = t.adversarial_backgrounds(len(X), training=False)   # pictures only: drawn here
            elif t.back == 'noise':
                B = keras.random.normal(X.shape, seed=t.seeds)
            else:
                B = np.zeros_like(X)   # black; 'real' pictures show black as well
            Z = np.clip(t.composite(X, hard, B).numpy(), 0, 1)
            rows = [list(X), list(_gray_to(np.asarray(soft), X)), list(_gray_to(hard.numpy(), X)), list(Z)]
            mydatasets.save_png(os.path.join(self.directory, f'epoch-{epoch + 1:03d}-{name}.png'),
                                mydatasets.montage(rows, invert_gray=False))
