"""Phase 3: train the classifier and the background generator adversarially.

    python train3.py mnist_backgrounds mnist-phase1.keras heuristic otsu adv --output mnist-phase3.keras

Each step: M = the mask of the (augmented) image X, binarized per image; Z = X*M + B*(1-M);
the classifier minimises CE(Y, f(Z)); with back=adv the generator paints B to maximise it (plus
relu(mean(B) - 0.5) for 1-channel images). Both updates come from the same forward pass. After
each epoch the accuracy on the training set and every test set; at the end one CSV line and the
classifier saved to --output (with adv, the generator beside it as NAME-back.EXT).
"""
import os

import mycli
import mydatasets as md
import myfolders

EPOCHS = 100
BATCHSIZE = 8
EVAL_BATCHSIZE = 1024
TILES = 2
AREA = 0.2
GEN_LR = 1e-5
HISTORY = 4096   # past backgrounds kept for --replay: 16 MB at 32x32x1
IMSAVE_IMAGES = 12


def main():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    p.add_argument('model', help='phase-1 classifier (.keras, or .h5 of this project or of the published code)')
    p.add_argument('unet_model', help='phase-2 mask generator file (or several, joined by commas: the painted images '
                   'take their masks from each in turn), "heuristic" (mask = X > 0), or "masks" (the masks that come '
                   'with a folder data set, DIR/masks/)')
    p.add_argument('binarize_mask', choices=mycli.BINARIZE, help='per-image binarization of the mask')
    p.add_argument('back', choices=mycli.BACKS, help='backgrounds pasted behind the object')
    p.add_argument('--backgrounds', metavar='DIR', help='back=real: a folder of photographs, cropped at random to '
                   'the image size (default for prates: its bg/ photos)')
    p.add_argument('--tiles', type=mycli.positive_int, default=TILES, help='adv backgrounds: tiles x tiles generator draws')
    p.add_argument('--area', type=mycli.fraction, default=AREA, help='foreground share for binarize_mask=quantile')
    mycli.schedule_args(p, 'classifier (and, with --lr-schedule, generator)')
    p.add_argument('--gen-lr', type=mycli.rate, default=GEN_LR, help=f'background generator learning rate (default {GEN_LR:g})')
    p.add_argument('--gen-span', type=mycli.span, default=1.0, metavar='P',
                   help='with --lr-schedule cosine: the generator\'s rate decays to 0 over the first P of the run and '
                   'stays 0 after, so that the classifier has the last word against a generator that no longer moves '
                   '(default 1: over the whole run)')
    p.add_argument('--clean-share', type=mycli.share, default=0.0, metavar='P',
                   help='share of each batch trained on as it is, with its own background (default 0: published)')
    p.add_argument('--average', type=mycli.non_negative_int, default=0, metavar='N',
                   help='evaluate and save a moving average of the classifier\'s weights over about the last N '
                   'steps (default 0: the weights themselves, published)')
    p.add_argument('--replay', type=mycli.share, default=0.0, metavar='P',
                   help='share of each batch whose background is one the generator painted earlier, from a uniform '
                   'sample of everything it has painted (adv only; default 0: published)')
    p.add_argument('--history', type=mycli.positive_int, default=HISTORY, metavar='N',
                   help=f'with --replay: how many past backgrounds are kept (default {HISTORY})')
    p.add_argument('--generators', type=mycli.positive_int, default=1, metavar='K',
                   help='adv only: K generators one after another, each from new random weights for a K-th of the '
                   'run\'s steps (default 1: one for the whole run, published)')
    p.add_argument('--back-flip', type=mycli.share, default=0.0, metavar='P',
                   help='adv only: each painted background is mirrored left to right with probability P before it is '
                   'pasted; the object never is (default 0: published)')
    p.add_argument('--imsave', metavar='DIR', help='write PNGs per epoch (12 images of each test set: image, '
                   'soft mask, binarized mask, composite) into DIR')
    p.add_argument('--output', help='classifier file, .keras or .h5 (default: DATASET-phase3-BACK.keras)')
    mycli.training_args(p, EPOCHS, BATCHSIZE, EVAL_BATCHSIZE)
    args = p.parse_args()
    output = mycli.output_file(args.output, f'{args.dataset}-phase3-{args.back}.keras')
    stem, ext = os.path.splitext(output)
    back_output = f'{stem}-back{ext}'
    if args.imsave:
        mycli.output_dir(args.imsave, what='picture folder')
    generator_only = [o for o, on in (('--replay', args.replay), ('--generators', args.generators > 1),
                                      ('--gen-span', args.gen_span < 1), ('--back-flip', args.back_flip > 0)) if on]
    if generator_only and args.back != 'adv':
        raise mycli.UserError(f'{generator_only[0]} acts on the background generator: it needs back=adv')
    if args.gen_span < 1 and args.lr_schedule != 'cosine':
        raise mycli.UserError('--gen-span shortens the generator\'s learning-rate decay: it needs --lr-schedule cosine')
    if args.back == 'real' and not args.backgrounds and not args.dataset.startswith('prates'):
        raise mycli.UserError('back=real crops backgrounds from photographs: give --backgrounds DIR')
    if args.clean_share + args.replay > 1:
        raise mycli.UserError(f'--clean-share ({args.clean_share:g}) and --replay ({args.replay:g}) are shares of '
                              'the same batch: together at most 1')

    mycli.start_tensorflow()
    import mydatagen
    import mymodels
    import myrun
    import mytrainers
    manual = args.unet_model == 'masks'   # the data set's own masks, augmented with their images
    strategy, data, steps = myrun.start(args, masks=manual)
    Xtr, Ytr = data.train
    total = args.epochs * steps   # a learning-rate schedule spans the whole run, for both players

    with strategy.scope():   # models, optimisers and the training step live on every replica
        gen = mymodels.in_precision(mymodels.gen(data.shape, args.tiles), args.precision) if args.back == 'adv' else None
        classifier = myrun.load_model(args.model, 'classifier', data, args.precision)
        masks = 'manual' if manual else args.unet_model if args.unet_model == 'heuristic' else \
            [myrun.load_model(f, 'unet', data, args.precision) for f in args.unet_model.split(',')]
        trainer = mytrainers.BackgroundTrainer(classifier, masks, args.binarize_mask, args.back, gen, args.tiles,
                                               args.area, seed=args.seed, clean_share=args.clean_share,
                                               average=args.average, replay=args.replay, history=args.history,
                                               back_flip=args.back_flip,
                                               generator_every=0 if args.generators == 1 else -(-total // args.generators))
        lr = args.lr or mymodels.LEARNING_RATE[mymodels.classifier_kind(data.shape)]
        trainer.compile(optimizer=mymodels.adam(lr, args.lr_schedule, total),
                        gen_optimizer=mymodels.adam(args.gen_lr, args.lr_schedule, max(1, round(total * args.gen_span)))
                        if gen else None,
                        steps_per_execution=myrun.steps_per_execution(steps))
        trainer.build_all(md.to_float(Xtr[:1]))
    config = {'dataset': args.dataset, 'model': args.model, 'unet_model': args.unet_model,
              'binarize_mask': args.binarize_mask, 'back': args.back, 'tiles': args.tiles, 'area': args.area,
              'batchsize': args.batchsize, 'lr': args.lr, 'subset': args.subset, 'seed': args.seed, 'flip': args.flip,
              'lr_schedule': args.lr_schedule, 'gen_lr': args.gen_lr,
              'clean_share': args.clean_share, 'average': args.average, 'replay': args.replay, 'history': args.history,
              'generators': args.generators, 'gen_span': args.gen_span, 'back_flip': args.back_flip,
              'size': args.size, 'backgrounds': args.backgrounds, 'precision': args.precision}
    if args.lr_schedule != 'constant':
        config['epochs'] = args.epochs   # the schedule spans the run
    run = myrun.Run(output, config, args.resume, myrun.is_chief(strategy))
    with strategy.scope():
        start = run.restore(trainer)

    evaluator = myrun.Evaluator(data.sets, args.eval_batchsize)
    report = myrun.EpochReport(evaluator, classifier, weights=trainer.averaged)
    callbacks = [mytrainers.FreshGenerators(trainer)] if trainer.generator_every else []
    if args.imsave and run.chief:
        shown = [(n, md.to_float(X[:IMSAVE_IMAGES]), data.masks[n][:IMSAVE_IMAGES] if manual else None)
                 for n, (X, _) in data.tests if not manual or n in data.masks]
        callbacks.append(mytrainers.CompositePictures(trainer, shown, args.imsave))

    def pipeline(part):   # the batches, or the rows `part` of each (one worker's, under a strategy)
        ds = mydatagen.batches(Xtr, Ytr, args.batchsize, seed=args.seed, start_epoch=start, part=part,
                               masks=data.masks['train'] if manual else None, flip=args.flip)
        if args.back == 'real':
            crops = myfolders.photos(args.backgrounds, data.shape[0], data.shape[-1], args.seed) if args.backgrounds \
                else md.prates_backgen(seed=args.seed, size=data.shape[0])
            ds = mydatagen.with_backgrounds(ds, crops, args.batchsize, part)
        return trainer.with_noise(ds, seed=args.seed, start_step=start * steps, part=part)

    run.fit(trainer, mydatagen.distribute(strategy, args.batchsize, pipeline), steps, args.epochs, report, *callbacks)

    trainer.adopt_average()
    run.finish(report.last or evaluator(classifier), {output: classifier, **({back_output: gen} if gen else {})},
               data.class_names)


if __name__ == '__main__':
    mycli.run_main(main)
