"""Phase 2: train the mask generator (U-Net) against the frozen phase-1 classifier.

    python train2.py mnist_backgrounds mnist-phase1.keras otsu --output mnist-phase2.keras

Step: M = unet(X), ce = CE(Y, f(X*M)), mask loss = ce + mean(relu(mean(M) - area)) (or its
square with --loss squared) + total_variation * TV(M); only the U-Net learns (Adam 1e-5).
binarize_mask is used only for the --debug pictures. At the end one CSV line (the command, the
classifier's accuracy on the training set, then on each test set) and the U-Net saved to --output.
"""
import mydatasets as md

EPOCHS = 100
BATCHSIZE = 8
EVAL_BATCHSIZE = 1024
AREA = 0.2
TOTAL_VARIATION = 0.1
DEBUG_IMAGES = 6


def main():
    p = md.ArgumentParser(description=__doc__.split('\n')[1], epilog=f'Data sets: {", ".join(md.NAMES)}.')
    p.add_argument('dataset', type=md.dataset_arg, help='data set name')
    p.add_argument('model', help='phase-1 classifier (.keras, or .h5 of this project or of the published code)')
    p.add_argument('binarize_mask', choices=['otsu', '0.5', 'quantile', 'none'], help='for the --debug pictures')
    p.add_argument('--loss', choices=['abs', 'squared'], default='abs', help='penalty on mask area above --area')
    p.add_argument('--area', type=md.fraction, default=AREA, help='share of the image a mask may cover freely')
    p.add_argument('--total-variation', type=float, default=TOTAL_VARIATION, help='weight of the TV penalty')
    p.add_argument('--debug', metavar='DIR', help='write a PNG per epoch (6 images, soft and binarized masks) into DIR')
    p.add_argument('--output', help='U-Net file, .keras or .h5 (default: DATASET-phase2.keras)')
    md.training_args(p, EPOCHS, BATCHSIZE, EVAL_BATCHSIZE)
    args = p.parse_args()
    output = args.output or f'{args.dataset}-phase2.keras'
    md.check_output_file(output)
    if args.debug:
        md.check_picture_dir(args.debug)

    import numpy as np
    import mydatagen
    import mymodels
    strategy = mymodels.setup(args.seed, args.strategy)
    (Xtr, Ytr), tss = md.subset(md.load(args.dataset), args.subset, args.test_subset)
    names = md.DATASETS[args.dataset][1]
    mydatagen.check_batch(len(Xtr), args.batchsize)
    mymodels.check_replicas(strategy, args.batchsize)

    with strategy.scope():   # models, optimisers and the training step live on every replica
        classifier = mymodels.load(args.model, 'classifier', Xtr.shape[1:], int(Ytr.max()) + 1)
        unet = mymodels.unet(Xtr.shape[1:])
        trainer = mymodels.MaskTrainer(classifier, unet, args.area, args.total_variation, args.loss)
        trainer.compile(optimizer=mymodels.adam('unet'), steps_per_epoch=len(Xtr) // args.batchsize)
        trainer(Xtr[:1])
        trainer.optimizer.build(unet.trainable_variables)
    config = {'dataset': args.dataset, 'model': args.model, 'batchsize': args.batchsize, 'loss': args.loss,
              'area': args.area, 'total_variation': args.total_variation, 'subset': args.subset, 'seed': args.seed}
    run = mymodels.Run(output, config, args.resume, mymodels.is_chief(strategy))
    with strategy.scope():
        start = run.restore(trainer)

    # the classifier is frozen: its accuracies are computed once and reported at every epoch
    evaluator = mymodels.Evaluator([('train', (Xtr, Ytr))] + list(zip(names, tss)), args.eval_batchsize)
    acc = evaluator(classifier)
    callbacks = run.callbacks(mymodels.EpochReport(evaluator, classifier, fixed=acc))
    if args.debug and run.chief:
        debug_X = Xtr[np.linspace(0, len(Xtr), DEBUG_IMAGES, endpoint=False, dtype=int)]
        callbacks.append(mymodels.MaskPictures(unet, debug_X, args.binarize_mask, args.area, args.debug))
    ds = mydatagen.distribute(strategy, args.batchsize, lambda part: mydatagen.batches(
        Xtr, Ytr, args.batchsize, seed=args.seed or 0, start_epoch=start, part=part))
    trainer.fit(ds, steps_per_epoch=len(Xtr) // args.batchsize, epochs=args.epochs, initial_epoch=start,
                callbacks=callbacks, verbose=mymodels.fit_verbosity(), shuffle=False)

    run.finish(acc, {output: unet})


if __name__ == '__main__':
    md.run_main(main)
