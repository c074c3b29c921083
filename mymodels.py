"""The networks of the paper, Keras 3, 'same' padding (docs/method.md, "Architectures").

    classifier(shape, K)  small VGG-style classifier for images < 128 px      Adam 1e-3
    vgg19(shape, K)       ImageNet VGG19 + two Dense 4096 for images >= 128 px  Adam 1e-5
    unet(shape)           mask generator, sigmoid mask of shape (H, W, 1)      Adam 1e-5
    gen(shape, tiles)     background generator, noise -> one tile               Adam 1e-5
    attention(global, K)  the literature baseline, AG-CNN: a frozen classifier's attention crops
                          seen by a local branch, fused with its pooled features Adam 1e-3

Every model saves to .keras (and .h5) and loads back with keras.models.load_model(path); the
custom layers (VGG19's input preprocessing, AG-CNN's attention crop) are registered, so
importing this module is all that loading needs (the caller starts TensorFlow first:
mycli.start_tensorflow()). `load(path, expect=...)` is the scripts' loader: it also reads the Keras 2
.h5 files of the published code and says in one line what is wrong with a file that does not fit.
"""
import math
import os

import keras
from keras import layers

from mycli import UserError
from myfiles import atomic, fault

LEARNING_RATE = {'classifier': 1e-3, 'vgg19': 1e-5, 'unet': 1e-5, 'gen': 1e-5}   # Adam, published
VGG_MEAN_BGR = [103.939, 116.779, 123.68]
BIG = 128   # images this high or more use vgg19


class ModelError(UserError):
    """A model cannot be built or loaded; the message is one line meant for the user."""


def _log2_blocks(h):
    # n = log2(H/4) blocks (rounded down: 28 px gives 2 blocks, as in the published code)
    n = int(math.log2(h / 4))
    if n < 1:
        raise ModelError(f'images of height {h} are too small for this architecture (need >= 8)')
    return n


def learning_rate(lr, schedule='constant', total_steps=None):
    """A constant learning rate (the published setting), or a cosine decay from lr to 0 over
    the whole run (the fast recipe). The optimiser's step count is checkpointed, so a resumed
    run continues the same curve."""
    if schedule == 'constant':
        return lr
    if schedule == 'cosine':
        return keras.optimizers.schedules.CosineDecay(lr, total_steps)
    raise ValueError(f'unknown learning-rate schedule {schedule!r}')


def adam(lr, schedule='constant', total_steps=None):
    """The optimiser of every network (the published one): Adam, at a constant rate or decayed."""
    return keras.optimizers.Adam(learning_rate(lr, schedule, total_steps))


def compile_classifier(model, optimizer, steps_per_execution=1):
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=['accuracy'], steps_per_execution=steps_per_execution)
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
    return compile_classifier(keras.Model(inp, out, name='classifier'), adam(LEARNING_RATE['classifier']))


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
    return compile_classifier(keras.Model(inp, out, name='vgg19_classifier'), adam(LEARNING_RATE['vgg19']))


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
# The literature baseline the authors compared against: an attention-guided CNN (AG-CNN, Guan et
# al. 2018), as their train_att.py built it, with its crop computed inside the model

def largest_region_box(mask):
    """mask (n, h, w) bool -> (n, 4) int32 boxes (r1, c1, r2, c2), r2 and c2 excluded, of each
    mask's largest 8-connected region (ties: the region whose first cell in raster order comes
    first, as scikit-image's label/regionprops give them); an empty mask gives the whole grid.
    Regions are found by letting every cell take the smallest index among its 8 neighbours, h*w
    times: the grids are tiny (4x4 for 32 px images, 7x7 for VGG19 at 224 px)."""
    import tensorflow as tf
    n, h, w = tf.shape(mask)[0], mask.shape[1], mask.shape[2]
    cells = h * w
    m = tf.cast(mask, tf.bool)[..., None]
    label = tf.where(m, tf.reshape(tf.range(cells, dtype=tf.int32), [1, h, w, 1]), cells)
    for _ in range(cells):
        label = tf.where(m, tf.minimum(label, -tf.nn.max_pool2d(-label, 3, 1, 'SAME')), cells)
    flat = tf.reshape(label, [n, cells])
    sizes = tf.reduce_sum(tf.one_hot(flat, cells, dtype=tf.int32), 1)     # cells of each region
    inside = tf.reshape(flat == tf.argmax(sizes, 1, output_type=tf.int32)[:, None], [n, h, w])
    rows, cols = tf.reduce_any(inside, 2), tf.reduce_any(inside, 1)
    first = lambda a: tf.argmax(tf.cast(a, tf.int32), 1, output_type=tf.int32)
    end = lambda a: a.shape[1] - first(a[:, ::-1])
    box = tf.stack([first(rows), first(cols), end(rows), end(cols)], 1)
    return tf.where(tf.reduce_any(inside, [1, 2])[:, None], box, tf.constant([[0, 0, h, w]], tf.int32))


@keras.saving.register_keras_serializable(package='bial')
class AttentionCrop(layers.Layer):
    """AG-CNN's attention: from the global branch's last pooled features (n, h, w, c), the
    heatmap max over channels of |features|, min-max normalised per image; its cells >= tau;
    the largest 8-connected region; that region's cells as a box of the image (rows
    H*r1//h : H*r2//h, the same for columns), cropped and resized (bilinear) to size x size so
    that crops stack into batches. A constant heatmap (nothing stands out) crops the whole image."""

    def __init__(self, tau=0.7, size=32, **kw):
        super().__init__(**kw)
        self.tau, self.size = float(tau), int(size)

    def boxes(self, features, H, W):
        """(n, 4) int32 pixel boxes (r1, c1, r2, c2), r2 and c2 excluded, of the crops of H x W
        images whose pooled features are `features`."""
        import tensorflow as tf
        heat = tf.reduce_max(tf.abs(features), -1)
        lo, hi = tf.reduce_min(heat, [1, 2], keepdims=True), tf.reduce_max(heat, [1, 2], keepdims=True)
        flat = hi <= lo
        box = largest_region_box(tf.where(flat, True, (heat - lo) / tf.where(flat, 1.0, hi - lo) >= self.tau))
        h, w = features.shape[1:3]
        return tf.stack([H * box[:, 0] // h, W * box[:, 1] // w, H * box[:, 2] // h, W * box[:, 3] // w], 1)

    def call(self, inputs):
        import tensorflow as tf
        image, features = inputs
        H, W = image.shape[1:3]
        # crop_and_resize takes the first and last pixel centres of the crop, over H - 1 and W - 1
        boxes = tf.cast(self.boxes(features, H, W) - [0, 0, 1, 1], tf.float32) / [H - 1, W - 1, H - 1, W - 1]
        return tf.image.crop_and_resize(image, boxes, tf.range(tf.shape(image)[0]), [self.size, self.size])

    def compute_output_shape(self, shapes):
        return (shapes[0][0], self.size, self.size, shapes[0][-1])

    def get_config(self):
        return {**super().get_config(), 'tau': self.tau, 'size': self.size}


def attention_features(classifier):
    """The classifier up to its last pooled features: what its Flatten layer takes (the last
    max-pooling of the small classifier, VGG19's last block; the published code looked for a
    top-level max-pooling layer, which VGG19 does not have, and failed there)."""
    flatten = [l for l in classifier.layers if isinstance(l, layers.Flatten)]
    if not flatten:
        raise ModelError(f'{classifier.name} has no Flatten layer: not a classifier of this project')
    return keras.Model(classifier.inputs, flatten[-1].input, name='global_features')


def attention(global_classifier, K, tau=0.7, crop=None):
    """AG-CNN on a phase-1 classifier (the global branch, frozen): the attention crop of each
    image (resized to crop x crop, default the image's side) through a local branch of three
    stride-2 Conv 3x3 (128, 256, 512, ReLU) and global average pooling; concatenated with the
    global average of the global branch's pooled features; Dense 2048 and Dense 256 (without
    activation, as published), Dense K logits."""
    trunk = attention_features(global_classifier)
    trunk.trainable = False
    x = inp = keras.Input(global_classifier.input_shape[1:], name='image')
    features = trunk(x)
    local = AttentionCrop(tau, crop or x.shape[1], name='attention_crop')([x, features])
    for filters in (128, 256, 512):
        local = layers.Conv2D(filters, 3, strides=2, padding='same', activation='relu')(local)
    local = layers.GlobalAveragePooling2D()(local)
    fused = layers.Concatenate()([local, layers.GlobalAveragePooling2D()(features)])
    fused = layers.Dense(256)(layers.Dense(2048)(fused))
    return keras.Model(inp, layers.Dense(K, name='logits')(fused), name='attention_guided_cnn')


# ----------------------------------------------------------------------------------------------
# Precision: a property of the run, not of the file

PRECISIONS = {'float32': 'float32', 'bfloat16': 'mixed_bfloat16'}
FLOAT32_LAYERS = ('AttentionCrop',)   # tf.image.crop_and_resize has no bfloat16 kernel


def in_precision(model, precision='float32'):
    """The same network with the same weights, computing in `precision`: 'float32', or
    'bfloat16' (Keras' mixed precision: weights, their updates and every model's outputs stay
    float32, the layers inside compute in bfloat16; about 2.5x faster convolutions on CPUs with
    AMX, see docs/performance.md). Every layer's policy is rewritten, nested models' too, so a
    file saved by a bfloat16 run is a float32 model like any other (save() stores float32). A
    model whose every layer already has its policy is returned as it is."""
    policy = PRECISIONS[precision]
    outputs = {t._keras_history.operation.name for t in model.outputs}
    if all(layer.dtype_policy.name == _policy_for(layer.__class__.__name__, layer.name, policy, outputs, top)
           for layer, top in _computing_layers(model)):
        return model
    config = keras.saving.serialize_keras_object(model)
    _set_policies(config, policy, outputs)
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _policy_for(class_name, name, policy, outputs, top):
    """The policy a layer gets: float32 for FLOAT32_LAYERS and the layers giving the outer
    model's outputs (top: the layer is not inside a nested model), `policy` for the others."""
    return 'float32' if class_name in FLOAT32_LAYERS or (top and name in outputs) else policy


def _set_policies(config, policy, outputs, top=True):
    """Rewrite, in place, the dtype policy of every layer in a serialized model (_policy_for)."""
    for layer in config['config']['layers']:
        c = layer['config']
        if layer['class_name'] in ('Functional', 'Sequential'):
            _set_policies(layer, policy, outputs, top=False)
        if isinstance(c.get('dtype'), dict) and c['dtype'].get('class_name') == 'DTypePolicy':
            c['dtype']['config']['name'] = _policy_for(layer['class_name'], c['name'], policy, outputs, top)


def _computing_layers(model, top=True):
    """(layer, top) for every layer that computes, nested models' too (not inputs, not the
    nested models themselves)."""
    for l in model.layers:
        if isinstance(l, keras.Model):
            yield from _computing_layers(l, top=False)
        elif not isinstance(l, layers.InputLayer):
            yield l, top


# ----------------------------------------------------------------------------------------------
# Saving and loading

def save(model, path):
    """model.save, atomically: an interrupted save never leaves a broken file under `path`; a
    model computing in bfloat16 is saved as float32 (its weights are float32 already)."""
    model = in_precision(model, 'float32')
    with atomic(path) as tmp:
        model.save(tmp)
        fault('final-save')


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
