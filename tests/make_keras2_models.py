"""Write Keras 2 .h5 files shaped like the published code's models, with tf_keras (Keras 2), and
the predictions Keras 2 makes on fixed inputs. Run in its own process: python make_keras2_models.py DIR"""
import os
import sys

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as k2  # noqa: E402

L = k2.layers


def classifier(shape, K):
    x = inp = L.Input(shape)
    for i in range(int(np.log2(shape[0] / 4))):
        x = L.Conv2D(2 ** (i + 5), 3, 1, 'same', activation='relu')(x)
        x = L.MaxPooling2D()(x)
    x = L.Dense(128, activation='relu')(L.Flatten()(x))
    return k2.models.Model(inp, L.Dense(K)(x))


def unet(shape):
    x = inp = L.Input(shape)
    skips, n = [], int(np.log2(shape[0] / 4))
    for i in range(n):
        x = L.Conv2D(2 ** (i + 5), 3, 1, 'same', activation='relu')(x)
        skips.append(x)
        x = L.MaxPooling2D()(x)
    x = L.Conv2D(2 ** (n + 4), 3, 1, 'same', activation='relu')(x)
    for i, prev in enumerate(skips[::-1]):
        x = L.UpSampling2D()(x)
        x = L.Conv2D(2 ** (n - 1 - i + 5), 3, 1, 'same', activation='relu')(x)
        x = L.Concatenate()([x, prev])
    return k2.models.Model(inp, L.Conv2D(1, 1, activation='sigmoid')(x))


def gen(side, C):   # one tile of side `side`, noise d*d*C; LeakyReLU passed as an activation
    d = side
    while d % 2 == 0:
        d //= 2
    d = max(d, 4)
    n = int(np.log2(side / d))
    act = L.LeakyReLU(0.2)
    x = inp = L.Input([d * d * C])
    x = L.Reshape((d, d, C))(x)
    x = L.Conv2D(2 ** (n + 5), 3, 1, 'same', activation=act)(x)
    for i in range(n):
        x = L.UpSampling2D()(x)
        x = L.Conv2D(2 ** (n - 1 - i + 5), 3, 1, 'same', activation=act)(x)
    return k2.models.Model(inp, L.Conv2D(C, 1, activation='sigmoid')(x))


def vgg19(shape, K):
    base = k2.applications.VGG19(False, weights=None, input_shape=shape)
    x = inp = L.Input(shape)
    x = L.Lambda(lambda x: x[..., ::-1])(x)
    x = L.Lambda(lambda x: x * 255 - tf.constant([103.939, 116.779, 123.68], shape=(1, 1, 1, 3)))(x)
    x = L.Flatten()(base(x))
    x = L.Dense(4096, activation='relu')(x)
    x = L.Dense(4096, activation='relu')(x)
    return k2.models.Model(inp, L.Dense(K)(x))


if __name__ == '__main__':
    out = sys.argv[1]
    rng = np.random.default_rng(0)
    for name, m in [('clf', classifier((32, 32, 1), 10)), ('unet', unet((32, 32, 1))), ('gen', gen(16, 1)),
                    ('vgg', vgg19((32, 32, 3), 4))]:
        m.save(os.path.join(out, f'{name}.h5'))
        x = rng.random((3,) + m.input_shape[1:]).astype(np.float32)
        np.save(os.path.join(out, f'{name}-x.npy'), x)
        np.save(os.path.join(out, f'{name}-y.npy'), m.predict(x, verbose=0))
