"""Phase 2: train the mask generator (U-Net) against the frozen phase-1 classifier.

    python train2.py mnist_backgrounds mnist-phase1.keras otsu --output mnist-phase2.keras

Step: M = unet(X), ce = CE(Y, f(X*M)), mask loss = ce + mean(relu(mean(M) - area)) (or its
square with --loss squared) + total_variation * TV(M); only the U-Net learns (Adam, published at a
constant 1e-5; --lr and --lr-schedule change it). binarize_mask is used only for the --debug
pictures, and, for a folder data set with masks of its own, for the check of the U-Net's masks
against them (their IoU after each epoch, in the log). At the end one CSV line (the command, the
classifier's accuracy on the training set, then on each test set) and the U-Net saved to --output.
"""
import mycli
import mydatasets as md
import mylock
import myfolders
from mysettings import Phase2 as Settings   # every default, and what a checkpoint records

DEBUG_IMAGES = 6


def parser():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    p.add_argument('model', help='phase-1 classifier (.keras, or .h5 of this project or of the published code)')
    p.add_argument('binarize_mask', choices=mycli.BINARIZE, help='for the --debug pictures')
    p.add_argument('--loss', choices=['abs', 'squared'], help='penalty on mask area above --area')
    p.add_argument('--area', type=mycli.fraction, help='share of the image a mask may cover freely')
    p.add_argument('--total-variation', type=mycli.weight, help='weight of the TV penalty')
    mycli.schedule_args(p, 'U-Net', default='1e-5, published')
    p.add_argument('--debug', metavar='DIR', help='write a PNG per epoch (6 images, soft and binarized masks) into DIR')
    p.add_argument('--output', help='U-Net file, .keras or .h5 (default: DATASET-phase2.keras)')
    mycli.training_args(p, Settings)
    return p


def main():
    s = Settings.from_args(parser().parse_args())
    mylock.hold(s.output, s.strategy)   # one run per output: a second one stops here

    mycli.start_tensorflow(s.threads)
    import numpy as np
    import mydatagen
    import mymodels
    import myrun
    import mytrainers
    # a folder data set with masks of its own: the U-Net's masks are checked against them
    strategy, data, steps = myrun.start(s, masks=myfolders.has_masks(s.dataset))
    Xtr, Ytr = data.train

    with strategy.scope():   # models, optimisers and the training step live on every replica
        classifier = myrun.load_model(s.model, 'classifier', data, s.precision)
        unet = mymodels.in_precision(mymodels.unet(data.shape), s.precision)
        trainer = mytrainers.MaskTrainer(classifier, unet, s.area, s.total_variation, s.loss)
        trainer.compile(optimizer=mymodels.adam(s.lr or mymodels.LEARNING_RATE['unet'], s.lr_schedule, s.epochs * steps),
                        steps_per_execution=myrun.steps_per_execution(steps))
        trainer(mydatagen.to_float(Xtr[:1]))
        trainer.optimizer.build(unet.trainable_variables)
    run = myrun.Run(s.output, s.record(), s.resume, myrun.is_chief(strategy))
    with strategy.scope():
        start = run.restore(trainer)

    # the classifier is frozen: its accuracies are computed once (--report none: never)
    report = myrun.EpochReport(myrun.Evaluator(data.sets, s.eval_batchsize), classifier, frozen=True, when=s.report)
    pictures = []
    if s.debug and run.chief:
        shown = mydatagen.to_float(Xtr[np.linspace(0, len(Xtr), DEBUG_IMAGES, endpoint=False, dtype=int)])
        pictures.append(mytrainers.MaskPictures(unet, shown, s.binarize_mask, s.area, s.debug))
    if data.masks:
        pictures.append(mytrainers.MaskAgreement(unet, data, s.binarize_mask, s.area))
    batches = mydatagen.distribute(strategy, s.batchsize, lambda part: mydatagen.batches(
        Xtr, Ytr, s.batchsize, seed=s.seed, start_epoch=start, part=part, flip=s.flip, warp=s.warp))
    run.fit(trainer, batches, steps, s.epochs, report, *pictures)

    run.finish(report.final(), {s.output: unet}, data.class_names)


if __name__ == '__main__':
    mycli.run_main(main)
