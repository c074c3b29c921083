"""Phase 3: train the classifier and the background generator adversarially.

    python train3.py mnist_backgrounds mnist-phase1.keras heuristic otsu adv --output mnist-phase3.keras

Each step: M = the mask of the (augmented) image X, binarized per image; Z = X*M + B*(1-M);
the classifier minimises CE(Y, f(Z)); with back=adv the generator paints B to maximise it (plus
relu(mean(B) - 0.5) for 1-channel images). Both updates come from the same forward pass. After
each epoch the accuracy on the training set and every test set; at the end one CSV line and the
classifier saved to --output (with adv, the generator beside it as NAME-back.EXT).
"""
import mydatasets as md

EPOCHS = 100
BATCHSIZE = 8
EVAL_BATCHSIZE = 1024
TILES = 2
AREA = 0.2
IMSAVE_IMAGES = 12


def main():
    p = md.ArgumentParser(description=__doc__.split('\n')[1], epilog=f'Data sets: {", ".join(md.NAMES)}.')
    p.add_argument('dataset', type=md.dataset_arg, help='data set name')
    p.add_argument('model', help='phase-1 classifier (.keras, or .h5 of this project or of the published code)')
    p.add_argument('unet_model', help='phase-2 mask generator file, or "heuristic" (mask = X > 0)')
    p.add_argument('binarize_mask', choices=['otsu', '0.5', 'quantile', 'none'], help='per-image binarization of the mask')
    p.add_argument('back', choices=['black', 'noise', 'adv', 'real'], help='backgrounds pasted behind the object')
    p.add_argument('--tiles', type=md.positive_int, default=TILES, help='adv backgrounds: tiles x tiles generator draws')
    p.add_argument('--area', type=md.fraction, default=AREA, help='foreground share for binarize_mask=quantile')
    p.add_argument('--lr', type=float, help='classifier learning rate (default: 1e-3, or 1e-5 from 128 px)')
    p.add_argument('--lr-schedule', choices=['constant', 'cosine'], default='constant',
                   help='learning rates of the classifier and the generator: constant (published) or cosine decay to 0 over the run')
    p.add_argument('--gen-lr', type=float, default=1e-5, help='background generator learning rate (default 1e-5)')
    p.add_argument('--clean-share', type=md.share, default=0.0, metavar='P',
                   help='share of each batch trained on as it is, with its own background (default 0: published)')
    p.add_argument('--average', type=md.non_negative_int, default=0, metavar='N',
                   help='evaluate and save a moving average of the classifier\'s weights over about the last N '
                   'steps (default 0: the weights themselves, published)')
    p.add_argument('--imsave', metavar='DIR', help='write PNGs per epoch (12 images of each test set: image, '
                   'soft mask, binarized mask, composite) into DIR')
    p.add_argument('--output', help='classifier file, .keras or .h5 (default: DATASET-phase3-BACK.keras)')
    md.training_args(p, EPOCHS, BATCHSIZE, EVAL_BATCHSIZE)
    args = p.parse_args()
    output = args.output or f'{args.dataset}-phase3-{args.back}.keras'
    md.check_output_file(output)
    stem, ext = md.os.path.splitext(output)
    back_output = f'{stem}-back{ext}'
    if args.imsave:
        md.check_picture_dir(args.imsave)

    import mydatagen
    import mymodels
    strategy = mymodels.setup(args.seed, args.strategy)
    (Xtr, Ytr), tss = md.subset(md.load(args.dataset), args.subset, args.test_subset)
    names = md.DATASETS[args.dataset][1]
    shape = Xtr.shape[1:]
    mydatagen.check_batch(len(Xtr), args.batchsize)
    mymodels.check_replicas(strategy, args.batchsize)

    with strategy.scope():   # models, optimisers and the training step live on every replica
        gen = mymodels.gen(shape, args.tiles) if args.back == 'adv' else None
        classifier = mymodels.load(args.model, 'classifier', shape, int(Ytr.max()) + 1)
        masks = args.unet_model if args.unet_model == 'heuristic' else mymodels.load(args.unet_model, 'unet', shape)
        trainer = mymodels.BackgroundTrainer(classifier, masks, args.binarize_mask, args.back, gen, args.tiles,
                                             args.area, seed=args.seed, clean_share=args.clean_share,
                                             average=args.average)
        lr = args.lr or mymodels.LEARNING_RATE[mymodels.classifier_kind(shape)]
        steps = len(Xtr) // args.batchsize
        total = args.epochs * steps   # the schedule spans the whole run, for both players
        trainer.compile(optimizer=keras_adam(mymodels.learning_rate(lr, args.lr_schedule, total)),
                        gen_optimizer=keras_adam(mymodels.learning_rate(args.gen_lr, args.lr_schedule, total)) if gen else None,
                        steps_per_epoch=steps)
        trainer.build_all(Xtr[:1])
    config = {'dataset': args.dataset, 'model': args.model, 'unet_model': args.unet_model,
              'binarize_mask': args.binarize_mask, 'back': args.back, 'tiles': args.tiles, 'area': args.area,
              'batchsize': args.batchsize, 'lr': args.lr, 'subset': args.subset, 'seed': args.seed,
              'lr_schedule': args.lr_schedule, 'gen_lr': args.gen_lr,
              'clean_share': args.clean_share, 'average': args.average}
    if args.lr_schedule != 'constant':
        config['epochs'] = args.epochs   # the schedule spans the run
    run = mymodels.Run(output, config, args.resume, mymodels.is_chief(strategy))
    with strategy.scope():
        start = run.restore(trainer)

    evaluator = mymodels.Evaluator([('train', (Xtr, Ytr))] + list(zip(names, tss)), args.eval_batchsize)
    report = mymodels.EpochReport(evaluator, classifier, weights=trainer.averaged)
    callbacks = run.callbacks(report)
    if args.imsave and run.chief:
        callbacks.append(mymodels.CompositePictures(trainer, [(n, X) for n, (X, _) in zip(names, tss)],
                                                    args.imsave, IMSAVE_IMAGES))

    def pipeline(part):   # the batches, or the rows `part` of each (one worker's, under a strategy)
        ds = mydatagen.batches(Xtr, Ytr, args.batchsize, seed=args.seed or 0, start_epoch=start, part=part)
        if args.back == 'real':
            ds = mydatagen.with_backgrounds(ds, md.prates_backgen(seed=args.seed, size=shape[0]), args.batchsize, part)
        return trainer.with_noise(ds, seed=args.seed or 0, start_step=start * steps, part=part)

    ds = mydatagen.distribute(strategy, args.batchsize, pipeline)
    trainer.fit(ds, steps_per_epoch=steps, epochs=args.epochs, initial_epoch=start,
                callbacks=callbacks, verbose=mymodels.fit_verbosity(), shuffle=False)

    trainer.adopt_average()
    run.finish(report.last or evaluator(classifier), {output: classifier, **({back_output: gen} if gen else {})})


def keras_adam(lr):
    import keras
    return keras.optimizers.Adam(lr)


if __name__ == '__main__':
    md.run_main(main)
