"""Phase 1: train the classifier alone on the augmented training set.

    python train1.py mnist_backgrounds --epochs 100 --batchsize 8 --output mnist-phase1.keras

Images under 128 px use the small VGG-style classifier, from 128 px the ImageNet VGG19 one.
Validation on the last test set after each epoch; at the end one CSV line (the command, the
accuracy on the training set, then on each test set) and the model saved to --output.
"""
import mydatasets as md

EPOCHS = 100
BATCHSIZE = 8
EVAL_BATCHSIZE = 1024   # evaluation only: big batches, same numbers, far less overhead


def main():
    p = md.ArgumentParser(description=__doc__.split('\n')[1], epilog=f'Data sets: {", ".join(md.NAMES)}.')
    p.add_argument('dataset', type=md.dataset_arg, help='data set name')
    p.add_argument('--lr', type=float, help='learning rate (default: 1e-3, or 1e-5 for VGG19)')
    p.add_argument('--lr-schedule', choices=['constant', 'cosine'], default='constant',
                   help='constant (published) or cosine decay to 0 over the run')
    p.add_argument('--output', help='model file, .keras or .h5 (default: DATASET-phase1.keras)')
    p.add_argument('--weights', choices=['imagenet', 'none'], default='imagenet',
                   help='VGG19 start (images >= 128 px): ImageNet weights (a download) or random')
    md.training_args(p, EPOCHS, BATCHSIZE, EVAL_BATCHSIZE)
    args = p.parse_args()
    output = args.output or f'{args.dataset}-phase1.keras'
    md.check_output_file(output)

    import mydatagen
    import mymodels
    strategy = mymodels.setup(args.seed, args.strategy)
    (Xtr, Ytr), tss = md.subset(md.load(args.dataset), args.subset, args.test_subset)
    names = md.DATASETS[args.dataset][1]
    mydatagen.check_batch(len(Xtr), args.batchsize)
    mymodels.check_replicas(strategy, args.batchsize)

    with strategy.scope():   # models and optimisers live on every replica
        model = mymodels.build_classifier(Xtr.shape[1:], int(Ytr.max()) + 1, None if args.weights == 'none' else 'imagenet')
        lr = args.lr or mymodels.LEARNING_RATE[mymodels.classifier_kind(Xtr.shape[1:])]
        steps = len(Xtr) // args.batchsize
        mymodels.compile_classifier(model, mymodels.learning_rate(lr, args.lr_schedule, args.epochs * steps), steps)
        model.optimizer.build(model.trainable_variables)
    config = {'dataset': args.dataset, 'batchsize': args.batchsize, 'lr': args.lr, 'subset': args.subset,
              'seed': args.seed, 'lr_schedule': args.lr_schedule}
    if args.lr_schedule != 'constant':
        config['epochs'] = args.epochs   # the schedule spans the run
    run = mymodels.Run(output, config, args.resume, mymodels.is_chief(strategy))
    with strategy.scope():
        start = run.restore(model)

    evaluator = mymodels.Evaluator([('train', (Xtr, Ytr))] + list(zip(names, tss)), args.eval_batchsize)
    report = mymodels.EpochReport(evaluator, model, names=[names[-1]])   # validation: the last test set
    ds = mydatagen.distribute(strategy, args.batchsize, lambda part: mydatagen.batches(
        Xtr, Ytr, args.batchsize, seed=args.seed or 0, start_epoch=start, part=part))
    model.fit(ds, steps_per_epoch=len(Xtr) // args.batchsize, epochs=args.epochs, initial_epoch=start,
              callbacks=run.callbacks(report), verbose=mymodels.fit_verbosity(), shuffle=False)

    run.finish(evaluator(model), {output: model})


if __name__ == '__main__':
    md.run_main(main)
