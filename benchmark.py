"""Speed of every phase on real MNIST-with-backgrounds, in images per second after a warm-up.

    python benchmark.py [--quick] [--output benchmark.json]

Measures the augmentation pipeline alone; a phase-1 step; a phase-2 step; phase-3 steps for the
backgrounds black, noise, adv and the binarize modes otsu, quantile (heuristic masks), and adv with
half the images keeping their own background (--clean-share 0.5) and a quarter replayed (the fast
recipe's --replay 0.25); a step of the attention-guided CNN baseline (train_att.py); evaluation
(prediction); at batch sizes 8 (the paper's) and 128 (phase 1 also 512); and a pure-compute reference: the same
phase-1 step fed from one batch already in memory, no augmentation. Also this machine's fp32
matmul peak, each phase's training FLOPs per image and the share of the peak reached.
Then each phase of reproduce.py's fast recipe at the recipe's own settings (rows "fast: ...").
Every training step runs through the scripts' own code (fit() on the trainers of mytrainers).
"""
import json
import os
import platform
import time

import mycli
import mydatasets as md
import myreport
import mysettings

BATCH_SIZES = [8, 128]
PEAK_BATCH = 512       # phase 1 only (not with --quick): the share of the matmul peak at a big batch
SECONDS = 6.0          # timed window of the non-training measurements (--quick: 1)
EVAL_BATCHSIZE = 1024
# (background, binarize mode, clean share, replay share): the last is the fast recipe's phase 3
PHASE3 = [('black', 'otsu', 0.0, 0.0), ('noise', 'otsu', 0.0, 0.0), ('adv', 'otsu', 0.0, 0.0), ('adv', 'quantile', 0.0, 0.0),
          ('adv', 'otsu', 0.5, 0.0), ('adv', 'otsu', 0.5, 0.25)]


def main():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('--quick', action='store_true', help='short windows; phase 1 at batch 8 and 128, then each phase '
                   'at the fast recipe\'s settings only: under a minute')
    p.add_argument('--output', help='JSON file with every figure (default benchmark.json)')
    p.add_argument('--dataset', type=mycli.checked(md.check_name), default='mnist_backgrounds')
    mycli.precision_arg(p, None, "the fast recipe's: " + mycli.AUTO_PRECISION)
    args = p.parse_args()
    import reproduce
    args.precision = args.precision or mycli.recipe_precision(reproduce.PRECISION['fast'])
    output = mycli.output_file(args.output, 'benchmark.json', ('.json',))

    mycli.start_tensorflow()   # as the scripts start it (oneDNN on); an earlier import of tensorflow would skip that
    import tensorflow as tf
    import keras
    import mydatagen
    import mymodels
    import myrun
    import mytrainers
    myrun.setup(0)
    seconds = 1.0 if args.quick else SECONDS
    data = md.dataset(args.dataset)
    (X, Y), tss = data.train, [s for _, s in data.tests]
    shape, K = data.shape, data.classes
    spe = myrun.STEPS_PER_EXECUTION

    def P(model):   # every trained or evaluated model computes in --precision (the FLOP counts are float32 models')
        return mymodels.in_precision(model, args.precision)

    def classifier():
        return mymodels.compile_classifier(P(mymodels.classifier(shape, K)), mymodels.adam(1e-3), spe)
    results = []

    def record(name, bs, ips, flops=None):
        peak_share = ips * flops / peak if flops else None
        results.append({'case': name, 'batch': bs, 'images_per_s': round(ips, 1),
                        'train_gflop_per_image': round(flops / 1e9, 4) if flops else None,
                        'share_of_peak': round(peak_share, 3) if peak_share else None})
        share = f'{100 * peak_share:5.1f}%' if peak_share else '     -'
        gf = f'{flops / 1e6:8.1f}' if flops else '       -'
        print(f'{name:<34} {bs:>5} {ips:>12,.0f} {gf} {share}', flush=True)

    def timed_fit(model, ds, bs):
        """Images/s of the second of two epochs of one fit() call (the first traces and warms up);
        an epoch is a whole number of graph calls (steps_per_execution) of about 2,000 images."""
        steps = spe * (1 if args.quick else max(1, round(2048 / bs / spe)))
        clock = EpochClock()
        model.fit(ds, steps_per_epoch=steps, epochs=2, verbose=0, shuffle=False, callbacks=[clock])
        return steps * bs / clock.last

    peak = matmul_peak(tf, seconds)
    print(f'TensorFlow {tf.__version__}, Keras {keras.__version__}, CPU: {myreport.cpu()}, {os.cpu_count()} cores, '
          f'threads intra={tf.config.threading.get_intra_op_parallelism_threads()} '
          f'inter={tf.config.threading.get_inter_op_parallelism_threads()} (0 = all cores), '
          f'oneDNN {"on" if mycli.onednn_enabled() else "off"}, precision {args.precision}')
    print(f'fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s\n')
    print(f'{"case":<34} {"batch":>5} {"images/s":>12} {"MFLOP/im":>8} {"peak":>6}')

    clf_f = forward_flops(mymodels.classifier(shape, K))
    unet_f = forward_flops(mymodels.unet(shape))
    gen_m = mymodels.gen(shape, 2)
    gen_f = forward_flops(gen_m) * 4          # tiles x tiles = 4 tiles per image
    flops = {'phase1': 3 * clf_f,                                 # forward + 2x backward
             'phase2': 3 * unet_f + 2 * clf_f,                    # U-Net trained; classifier forward + input grads
             'phase3 adv': 3 * clf_f + 3 * gen_f, 'phase3': 3 * clf_f}

    for bs in BATCH_SIZES:
        it = iter(mydatagen.batches(X, Y, bs, seed=0))
        for _ in range(10):
            next(it)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            next(it)
            n += bs
        record('augmentation pipeline', bs, n / (time.perf_counter() - t0))

        one = tf.data.Dataset.from_tensors((tf.constant(mydatagen.to_float(X[:bs])), tf.constant(Y[:bs]))).repeat()
        record('phase 1, pure compute (reference)', bs, timed_fit(classifier(), one, bs), flops['phase1'])
        clf = classifier()
        record('phase 1', bs, timed_fit(clf, mydatagen.batches(X, Y, bs, seed=0), bs), flops['phase1'])
        if args.quick:   # every phase is measured below, at the fast recipe's own settings
            continue

        t2 = mytrainers.MaskTrainer(clf, P(mymodels.unet(shape)))
        t2.compile(optimizer=mymodels.adam(mymodels.LEARNING_RATE['unet']), steps_per_execution=spe)
        record('phase 2', bs, timed_fit(t2, mydatagen.batches(X, Y, bs, seed=0), bs), flops['phase2'])

        for back, mode, share, replay in PHASE3:
            gen = P(mymodels.gen(shape, 2)) if back == 'adv' else None
            settings = mysettings.Phase3(dataset=args.dataset, model='', unet_model='heuristic', binarize_mask=mode,
                                         back=back, seed=0, clean_share=share, replay=replay)
            t3 = mytrainers.BackgroundTrainer(P(mymodels.classifier(shape, K)), settings, gen)
            t3.compile(optimizer=mymodels.adam(1e-3), steps_per_execution=spe,
                       gen_optimizer=mymodels.adam(mymodels.LEARNING_RATE['gen']) if gen else None)
            # the generator paints (and is trained through) the share of the images that get a fresh background
            f = flops['phase3 adv'] - (share + replay) * 3 * gen_f if back == 'adv' else flops['phase3']
            record(f'phase 3 {back} {mode}' + (f' clean {share:g}' if share else '') + (f' replay {replay:g}' if replay else ''),
                   bs, timed_fit(t3, t3.batches(mydatagen.batches(X, Y, bs, seed=0), bs), bs), f)

        att = P(mymodels.attention(classifier(), K, crop=shape[0] // 2))   # train_att.py's default crop
        mymodels.compile_classifier(att, mymodels.adam(1e-3), spe)
        frozen = forward_flops(mymodels.attention_features(clf))   # the global branch: forward only
        record('attention-guided CNN (train_att.py)', bs, timed_fit(att, mydatagen.batches(X, Y, bs, seed=0), bs),
               3 * (forward_flops(att) - frozen) + frozen)

    if not args.quick:
        bs = PEAK_BATCH
        one = tf.data.Dataset.from_tensors((tf.constant(mydatagen.to_float(X[:bs])), tf.constant(Y[:bs]))).repeat()
        record('phase 1, pure compute (reference)', bs, timed_fit(classifier(), one, bs), flops['phase1'])
        record('phase 1', bs, timed_fit(classifier(), mydatagen.batches(X, Y, bs, seed=0), bs), flops['phase1'])

    # each phase of reproduce.py's fast recipe at the recipe's own settings (batch size, rates and
    # their schedule, masks, shares), as reproduce.py runs it; the attention baseline with phase 1's
    fast = reproduce.RECIPES['fast']
    steps_of = lambda r: r.get('epochs', 1) * (min(len(X), r.get('subset') or len(X)) // r['batchsize'])
    r1, r2, r3 = fast['phase1'], fast['phase2'], fast['phase3']
    bs = r1['batchsize']
    clf = mymodels.compile_classifier(P(mymodels.classifier(shape, K)),
                                      mymodels.adam(1e-3, r1['lr_schedule'], steps_of(r1)), spe)
    record('fast: phase 1', bs, timed_fit(clf, mydatagen.batches(X, Y, bs, seed=0, flip=r1['flip']), bs),
           flops['phase1'])
    t2 = mytrainers.MaskTrainer(clf, P(mymodels.unet(shape)), area=r2['area'])
    t2.compile(optimizer=mymodels.adam(r2['lr']), steps_per_execution=spe)
    record('fast: phase 2', r2['batchsize'], timed_fit(t2, mydatagen.batches(X, Y, r2['batchsize'], seed=0,
                                                                              flip=r2['flip']), r2['batchsize']),
           flops['phase2'])
    # the U-Net's masks in every step (published), or computed once over the training set (--masks-once, the
    # fast recipe's U-Net row: that pass is timed on its own, then the step with the masks given)
    for masks in ('heuristic', 'unet', 'unet once'):
        settings = mysettings.Phase3(dataset=args.dataset, model='', unet_model='heuristic' if masks == 'heuristic'
                                     else 'unet.keras', binarize_mask=reproduce.MASK_MODE, back='adv', seed=0,
                                     **dict(r3, masks_once=masks == 'unet once'))
        gen = P(mymodels.gen(shape, settings.tiles))
        unets = [P(mymodels.unet(shape))] if masks != 'heuristic' else []
        Xs, Ys, given = X, Y, None
        if settings.masks_once:   # (--quick: on the first 4,096 images, a few seconds)
            Xs, Ys = (X[:4096], Y[:4096]) if args.quick else (X, Y)
            t0 = time.perf_counter()
            given = mytrainers.unet_masks(unets[0], Xs, settings.binarize_mask, EVAL_BATCHSIZE)
            record(f'U-Net masks of the training images, once (batch {EVAL_BATCHSIZE})', EVAL_BATCHSIZE,
                   len(Xs) / (time.perf_counter() - t0), unet_f)
        t3 = mytrainers.BackgroundTrainer(P(mymodels.classifier(shape, K)), settings, gen, unets, steps_of(r3))
        t3.compile(optimizer=mymodels.adam(settings.lr or 1e-3, settings.lr_schedule, steps_of(r3)),
                   steps_per_execution=spe,
                   gen_optimizer=mymodels.adam(settings.gen_lr, settings.lr_schedule, steps_of(r3)))
        bs = settings.batchsize
        # as above; with the U-Net mask its forward pass on the images that get a new background
        f = flops['phase3 adv'] - (settings.clean_share + settings.replay) * 3 * gen_f \
            + (unet_f * (1 - settings.clean_share) if unets and given is None else 0)
        label = 'unet mask computed once' if given is not None else f'{masks} mask'
        record(f'fast: phase 3 ({label})', bs,
               timed_fit(t3, t3.batches(mydatagen.batches(Xs, Ys, bs, seed=0, flip=settings.flip, masks=given), bs),
                         bs), f)
    att = P(mymodels.attention(classifier(), K, crop=shape[0] // 2))
    mymodels.compile_classifier(att, mymodels.adam(1e-3, r1['lr_schedule'], steps_of(r1)), spe)
    bs = r1['batchsize']
    frozen = forward_flops(mymodels.attention_features(clf))
    record('fast: attention-guided CNN', bs, timed_fit(att, mydatagen.batches(X, Y, bs, seed=0, flip=r1['flip']), bs),
           3 * (forward_flops(att) - frozen) + frozen)

    ev = myrun.Evaluator([('clean', tss[0])], EVAL_BATCHSIZE)
    ev(clf)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ev(clf)
        n += len(tss[0][1])
    record(f'evaluation (batch {EVAL_BATCHSIZE})', EVAL_BATCHSIZE, n / (time.perf_counter() - t0), clf_f)

    sets = data.sets
    n_eval = sum(len(s[1][1]) for s in sets)
    if args.quick:   # estimated from the evaluation rate above
        full_eval = n_eval / results[-1]['images_per_s']
    else:
        t0 = time.perf_counter()
        myrun.Evaluator(sets, EVAL_BATCHSIZE)(clf)
        full_eval = time.perf_counter() - t0
    print(f'\nper-epoch evaluation of train + {len(tss)} test sets ({n_eval:,} images): {full_eval:.1f} s'
          + (' (estimated)' if args.quick else ''))

    info = {'tensorflow': tf.__version__, 'keras': keras.__version__, 'python': platform.python_version(),
            'cpu': myreport.cpu(), 'cores': os.cpu_count(),
            'intra_op_threads': tf.config.threading.get_intra_op_parallelism_threads(),
            'inter_op_threads': tf.config.threading.get_inter_op_parallelism_threads(),
            'onednn': mycli.onednn_enabled(), 'precision': args.precision, 'matmul_peak_gflops': round(peak / 1e9, 1), 'quick': args.quick, 'dataset': args.dataset,
            'full_evaluation_s': round(full_eval, 2), 'results': results}
    from myfiles import write_text
    write_text(output, json.dumps(info, indent=1))
    print(f'wrote {output}')


def EpochClock():
    import keras

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.last = time.perf_counter() - self.t0
    return Clock()


def forward_flops(model):
    """Multiply-adds x 2 of the convolutions and dense layers of one image's forward pass."""
    import keras
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
        elif isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            out = layer.output.shape
            total += 2 * out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def matmul_peak(tf, seconds):
    a, b = tf.random.normal((1024, 1024)), tf.random.normal((1024, 1024))
    f = tf.function(lambda a, b: tf.matmul(a, b))
    f(a, b).numpy()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        f(a, b).numpy()
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0)


if __name__ == '__main__':
    mycli.run_main(main)
