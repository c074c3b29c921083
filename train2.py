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
import myfolders

EPOCHS = 100
BATCHSIZE = 8
EVAL_BATCHSIZE = 1024
AREA = 0.2
TOTAL_VARIATION = 0.1
DEBUG_IMAGES = 6


def main():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    p.add_argument('model', help='phase-1 classifier (.keras, or .h5 of this project or of the published code)')
    p.add_argument('binarize_mask', choices=mycli.BINARIZE, help='for the --debug pictures')
    p.add_argument('--loss', choices=['abs', 'squared'], default='abs', help='penalty on mask area above --area')
    p.add_argument('--area', type=mycli.fraction, default=AREA, help='share of the image a mask may cover freely')
    p.add_argument('--total-variation', type=mycli.weight, default=TOTAL_VARIATION, help='weight of the TV penalty')
    mycli.schedule_args(p, 'U-Net', default='1e-5, published')
    p.add_argument('--debug', metavar='DIR', help='write a PNG per epoch (6 images, soft and binarized masks) into DIR')
    p.add_argument('--output', help='U-Net file, .keras or .h5 (default: DATASET-phase2.keras)')
    mycli.training_args(p, EPOCHS, BATCHSIZE, EVAL_BATCHSIZE)
    args = p.parse_args()
    output = mycli.output_file(args.output, f'{args.dataset}-phase2.keras')
    if args.debug:
        mycli.output_dir(args.debug, what='picture folder')

    mycli.start_tensorflow()
    import numpy as np
    import mydatagen
    import mymodels
    import myrun
    import mytrainers
    # a folder data set with masks of its own: the U-Net's masks are checked against them
    strategy, data, steps = myrun.start(args, masks=myfolders.has_masks(args.dataset))
    Xtr, Ytr = data.train

    with strategy.scope():   # models, optimisers and the training step live on every replica
        classifier = myrun.load_model(args.model, 'classifier', data, args.precision)
        unet = mymodels.in_precision(mymodels.unet(data.shape), args.precision)
        trainer = mytrainers.MaskTrainer(classifier, unet, args.area, args.total_variation, args.loss)
        trainer.compile(optimizer=mymodels.adam(args.lr or mymodels.LEARNING_RATE['unet'], args.lr_schedule,
                                                args.epochs * steps),
                        steps_per_execution=myrun.steps_per_execution(steps))
        trainer(md.to_float(Xtr[:1]))
        trainer.optimizer.build(unet.trainable_variables)
    config = {'dataset': args.dataset, 'model': args.model, 'batchsize': args.batchsize, 'loss': args.loss,
              'area': args.area, 'total_variation': args.total_variation, 'subset': args.subset, 'seed': args.seed,
              'flip': args.flip, 'size': args.size, 'precision': args.precision}
    # the rate's settings are recorded only where they differ from the published ones, so that a
    # run made before these options existed can still be resumed
    if args.lr:
        config['lr'] = args.lr
    if args.lr_schedule != 'constant':
        config.update(lr_schedule=args.lr_schedule, epochs=args.epochs)   # the schedule spans the run
    run = myrun.Run(output, config, args.resume, myrun.is_chief(strategy))
    with strategy.scope():
        start = run.restore(trainer)

    # the classifier is frozen: its accuracies are computed once and reported at every epoch
    accuracies = myrun.Evaluator(data.sets, args.eval_batchsize)(classifier)
    pictures = []
    if args.debug and run.chief:
        shown = md.to_float(Xtr[np.linspace(0, len(Xtr), DEBUG_IMAGES, endpoint=False, dtype=int)])
        pictures.append(mytrainers.MaskPictures(unet, shown, args.binarize_mask, args.area, args.debug))
    if data.masks:
        pictures.append(mytrainers.MaskAgreement(unet, data, args.binarize_mask, args.area))
    batches = mydatagen.distribute(strategy, args.batchsize, lambda part: mydatagen.batches(
        Xtr, Ytr, args.batchsize, seed=args.seed, start_epoch=start, part=part, flip=args.flip))
    run.fit(trainer, batches, steps, args.epochs, myrun.EpochReport(None, classifier, fixed=accuracies), *pictures)

    run.finish(accuracies, {output: unet}, data.class_names)


if __name__ == '__main__':
    mycli.run_main(main)
