"""Run by test_distribute.py in its own process (logical CPU devices must be set before
TensorFlow starts): for each phase, a few training steps through fit() under the default strategy
and under MirroredStrategy over BIAL_CPU_DEVICES logical CPUs, from the same weights, on the
same global batches. Prints one JSON object: per phase and optimiser, the largest difference
between the two runs' weights, and how far the weights moved (so a step that did nothing shows).

    BIAL_CPU_DEVICES=2 python tests/replica_check.py
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import numpy as np  # noqa: E402

import mycli  # noqa: E402

STEPS = 2
CASES = sys.argv[1:]   # all by default
BATCH = 16


def main():
    mycli.start_tensorflow()
    import keras
    import tensorflow as tf
    import mydatagen
    import mydatasets
    import mymodels
    import mysettings
    import myrun
    import mytrainers

    mirrored = myrun.setup(0, 'mirrored')
    default = tf.distribute.get_strategy()
    (X, Y), _ = mydatasets.load('mnist')
    X, Y = X[:256], Y[:256]
    shape = X.shape[1:]

    # the starting weights, made once
    keras.utils.set_random_seed(0)
    start = {'classifier': mymodels.classifier(shape, 10).get_weights(), 'unet': mymodels.unet(shape).get_weights(),
             'gen': mymodels.gen(shape, 2).get_weights()}

    def build(kind):
        m = {'classifier': lambda: mymodels.classifier(shape, 10), 'unet': lambda: mymodels.unet(shape),
             'gen': lambda: mymodels.gen(shape, 2)}[kind]()
        m.set_weights(start[kind])
        return m

    def opt(name, lr):
        return keras.optimizers.Adam(lr) if name == 'adam' else keras.optimizers.SGD(lr)

    def phase1(o):
        clf = build('classifier')
        clf.compile(opt(o, 1e-3 if o == 'adam' else 0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    steps_per_execution=myrun.steps_per_execution(STEPS))
        return clf, [clf], lambda part: mydatagen.batches(X, Y, BATCH, seed=0, part=part)

    def phase2(o):
        clf, unet = build('classifier'), build('unet')
        t = mytrainers.MaskTrainer(clf, unet)
        t.compile(optimizer=opt(o, 1e-3 if o == 'adam' else 1.0), steps_per_execution=myrun.steps_per_execution(STEPS))
        return t, [unet], lambda part: mydatagen.batches(X, Y, BATCH, seed=0, part=part)

    def phase3(o, white=False, clean_share=0.0):
        clf, gen = build('classifier'), build('gen')
        if white:   # backgrounds near white: the relu(mean(B) - 0.5) term is active
            b = gen.layers[-1].bias
            b.assign(tf.fill(b.shape, 3.0))
        settings = mysettings.Phase3(dataset='mnist', model='', unet_model='heuristic', binarize_mask='otsu', back='adv',
                                     seed=0, clean_share=clean_share)
        t = mytrainers.BackgroundTrainer(clf, settings, gen)
        t.compile(optimizer=opt(o, 1e-3 if o == 'adam' else 0.1), gen_optimizer=opt(o, 1e-3 if o == 'adam' else 1.0),
                  steps_per_execution=myrun.steps_per_execution(STEPS))
        t.build_all(X[:1])   # as train3.py does (fit() cannot build it from named batches)
        return t, [clf, gen], lambda part: t.batches(mydatagen.batches(X, Y, BATCH, seed=0, part=part), BATCH, 0, 0, part)

    cases = {'phase1': phase1, 'phase2': phase2, 'phase3': phase3,
             # the white-background penalty active, and half the images keeping their own
             # background, so that each replica paints a different number
             'phase3_white_clean': lambda o: phase3(o, white=True, clean_share=0.5)}
    out = {'replicas': mirrored.num_replicas_in_sync}
    for name, make in cases.items():
        if CASES and name not in CASES:
            continue
        # SGD shows a wrong gradient scaling (a step twice too long); Adam, which normalises it
        # away, is checked once, on the case with two optimisers and replicas painting different numbers
        for o in (('adam', 'sgd') if name == 'phase3_white_clean' else ('sgd',)):
            weights, moved = [], []
            for strategy in (default, mirrored):
                with strategy.scope():
                    model, trained, pipeline = make(o)
                flat = lambda: np.concatenate([w.numpy().ravel() for m in trained for w in m.weights])
                before = flat()
                model.fit(mydatagen.distribute(strategy, BATCH, pipeline), steps_per_epoch=STEPS, epochs=1, verbose=0)
                weights.append(flat())
                moved.append(float(np.max(np.abs(weights[-1] - before))))
            out[f'{name}/{o}'] = {'max_diff': float(np.max(np.abs(weights[0] - weights[1]))), 'moved': min(moved)}
    print(json.dumps(out))


if __name__ == '__main__':
    main()
