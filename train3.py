"""Phase 3: train the classifier and the background generator adversarially.

    python train3.py mnist_backgrounds mnist-phase1.keras heuristic otsu adv --output mnist-phase3.keras

Each step: M = the mask of the (augmented) image X, binarized per image (--masks-once: the U-Net's
masks of the training images computed once and augmented with them); Z = X*M + B*(1-M);
the classifier minimises CE(Y, f(Z)); with back=adv the generator paints B to maximise it (plus
relu(mean(B) - 0.5) for 1-channel images). Both updates come from the same forward pass. After
each epoch the accuracy on the training set and every test set; at the end one CSV line and the
classifier saved to --output (with adv, the generator beside it as NAME-back.EXT).
"""
import mycli
import mydatasets as md
import mylock
import myfolders
from mysettings import Phase3 as Settings   # every default, and what a checkpoint records

IMSAVE_IMAGES = 12


def parser():
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
    p.add_argument('--tiles', type=mycli.positive_int, help='adv backgrounds: tiles x tiles generator draws')
    p.add_argument('--area', type=mycli.fraction, help='foreground share for binarize_mask=quantile')
    mycli.schedule_args(p, 'classifier (and, with --lr-schedule, generator)')
    p.add_argument('--gen-lr', type=mycli.rate, help='background generator learning rate (default %(default)g)')
    p.add_argument('--gen-span', type=mycli.span, metavar='P',
                   help='with --lr-schedule cosine: the generator\'s rate decays to 0 over the first P of the run and '
                   'stays 0 after, so that the classifier has the last word against a generator that no longer moves '
                   '(default 1: over the whole run)')
    p.add_argument('--clean-share', type=mycli.share, metavar='P',
                   help='share of each batch trained on as it is, with its own background (default 0: published)')
    p.add_argument('--clean-back', choices=['own', 'black'],
                   help='what the --clean-share images are shown on: their own background (own, the default) or '
                   'black, the object alone through its mask (where the own background gives the label away, as '
                   'in Biased-MNIST; with the heuristic mask X > 0 the two are the same)')
    p.add_argument('--average', type=mycli.non_negative_int, metavar='N',
                   help='evaluate and save a moving average of the classifier\'s weights over about the last N '
                   'steps (default 0: the weights themselves, published)')
    p.add_argument('--replay', type=mycli.share, metavar='P',
                   help='share of each batch whose background is one the generator painted earlier, from a uniform '
                   'sample of everything it has painted (adv only; default 0: published)')
    p.add_argument('--history', type=mycli.positive_int, metavar='N',
                   help='with --replay: how many past backgrounds are kept (default %(default)s)')
    p.add_argument('--generators', type=mycli.positive_int, metavar='K',
                   help='adv only: K generators one after another, each from new random weights for a K-th of the '
                   'run\'s steps (default 1: one for the whole run, published)')
    p.add_argument('--back-flip', type=mycli.share, metavar='P',
                   help='adv only: each painted background is mirrored left to right with probability P before it is '
                   'pasted; the object never is (default 0: published)')
    p.add_argument('--back-shuffle', type=mycli.share, metavar='P',
                   help='adv only, colour images: each painted background gets its colour channels in one of the six '
                   'orders (at random) with probability P before it is pasted; the object never does, so the '
                   'classifier cannot learn to read it in one channel the generator happens to leave dark '
                   '(default 0: published)')
    p.add_argument('--dim', choices=['gray', 'all', 'cap'],
                   help='adv only: the generator\'s penalty relu(mean(B) - 0.5), which keeps the backgrounds from '
                   'going white (a white object would vanish), on 1-channel images only (gray, published) or on '
                   'colour images too (all); cap: besides the published penalty, no painted pixel lighter than '
                   'mid-grey in every channel (each lowered by the excess of its darkest channel over 0.5)')
    p.add_argument('--masks-once', action='store_true',
                   help='with a U-Net: its binarized masks of the training images are computed once, before training, '
                   'and augmented with their images like a data set\'s own masks, instead of computed on every '
                   'augmented image (published); as fast as "masks". Without geometric augmentation (--warp 0 '
                   '--flip 0) each mask still covers its image; the U-Net then only misses the brightness augmentation')
    p.add_argument('--imsave', metavar='DIR', help='write PNGs per epoch (12 images of each test set: image, '
                   'soft mask, binarized mask, composite) into DIR')
    p.add_argument('--output', help='classifier file, .keras or .h5 (default: DATASET-phase3-BACK.keras)')
    mycli.training_args(p, Settings)
    return p


def main():
    s = Settings.from_args(parser().parse_args())
    mylock.hold(s.output, s.strategy)   # one run per output: a second one stops here

    mycli.start_tensorflow(s.threads)
    import mydatagen
    import mymodels
    import myrun
    import mytrainers
    manual = s.masks == 'manual'   # the data set's own masks, augmented with their images
    strategy, data, steps = myrun.start(s, masks=manual)
    Xtr, Ytr = data.train
    total = s.epochs * steps   # a learning-rate schedule spans the whole run, for both players

    with strategy.scope():   # models, optimisers and the training step live on every replica
        gen = mymodels.in_precision(mymodels.gen(data.shape, s.tiles), s.precision) if s.back == 'adv' else None
        classifier = myrun.load_model(s.model, 'classifier', data, s.precision)
        unets = [myrun.load_model(f, 'unet', data, s.precision) for f in s.unet_files]
        trainer = mytrainers.BackgroundTrainer(classifier, s, gen, unets, total_steps=total)
        lr = s.lr or mymodels.LEARNING_RATE[mymodels.classifier_kind(data.shape)]
        trainer.compile(optimizer=mymodels.adam(lr, s.lr_schedule, total),
                        gen_optimizer=mymodels.adam(s.gen_lr, s.lr_schedule, max(1, round(total * s.gen_span)))
                        if gen else None,
                        steps_per_execution=myrun.steps_per_execution(steps))
        trainer.build_all(mydatagen.to_float(Xtr[:1]))
    given = data.masks['train'] if manual else mytrainers.unet_masks(unets[0], Xtr, s.binarize_mask) \
        if s.masks_once else None   # masks that come with their images (augmented with them)
    run = myrun.Run(s.output, s.record(), s.resume, myrun.is_chief(strategy))
    with strategy.scope():
        start = run.restore(trainer)

    evaluator = myrun.Evaluator(data.sets, s.eval_batchsize)
    report = myrun.EpochReport(evaluator, classifier, weights=trainer.average.averaged, when=s.report)
    callbacks = [mytrainers.FreshGenerators(trainer)] if trainer.generator_every else []
    if s.imsave and run.chief:
        shown = [(n, mydatagen.to_float(X[:IMSAVE_IMAGES]), data.masks[n][:IMSAVE_IMAGES] if manual else None)
                 for n, (X, _) in data.tests if not manual or n in data.masks]
        callbacks.append(mytrainers.CompositePictures(trainer, shown, s.imsave))
    crops = None
    if s.back == 'real':   # photographs cropped at random to the image size
        crops = lambda: myfolders.photos(s.backgrounds, data.shape[0], data.shape[-1], s.seed) if s.backgrounds \
            else md.prates_backgen(seed=s.seed, size=data.shape[0])

    def pipeline(part):   # the batches, or the rows `part` of each (one worker's, under a strategy)
        ds = mydatagen.batches(Xtr, Ytr, s.batchsize, seed=s.seed, start_epoch=start, part=part,
                               masks=given, flip=s.flip, warp=s.warp)
        return trainer.batches(ds, s.batchsize, seed=s.seed, start_step=start * steps, part=part,
                               crops=crops() if crops else None)

    run.fit(trainer, mydatagen.distribute(strategy, s.batchsize, pipeline), steps, s.epochs, report, *callbacks)

    trainer.average.adopt()
    run.finish(report.final(), {s.output: classifier, **({s.companion('back'): gen} if gen else {})},
               data.class_names)


if __name__ == '__main__':
    mycli.run_main(main)
