"""Phase 1: train the classifier alone on the augmented training set.

    python train1.py mnist_backgrounds --epochs 100 --batchsize 8 --output mnist-phase1.keras

Images under 128 px use the small VGG-style classifier, from 128 px the ImageNet VGG19 one.
Validation on the last test set after each epoch; at the end one CSV line (the command, the
accuracy on the training set, then on each test set) and the model saved to --output.
"""
import mycli
import mydatasets as md

EPOCHS = 100
BATCHSIZE = 8
EVAL_BATCHSIZE = 1024   # evaluation only: big batches, same numbers, far less overhead


def main():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    mycli.schedule_args(p, 'classifier')
    p.add_argument('--output', help='model file, .keras or .h5 (default: DATASET-phase1.keras)')
    p.add_argument('--weights', choices=['imagenet', 'none'], default='imagenet',
                   help='VGG19 start (images >= 128 px): ImageNet weights (a download) or random')
    mycli.training_args(p, EPOCHS, BATCHSIZE, EVAL_BATCHSIZE)
    args = p.parse_args()
    output = mycli.output_file(args.output, f'{args.dataset}-phase1.keras')

    mycli.start_tensorflow()
    import mymodels
    import myrun
    strategy, data, steps = myrun.start(args)
    with strategy.scope():   # models and optimisers live on every replica
        model = mymodels.in_precision(mymodels.build_classifier(
            data.shape, data.classes, None if args.weights == 'none' else 'imagenet'), args.precision)
        myrun.prepare_classifier(model, mymodels.LEARNING_RATE[mymodels.classifier_kind(data.shape)], args, steps)
    config = {'dataset': args.dataset, 'batchsize': args.batchsize, 'lr': args.lr, 'subset': args.subset,
              'seed': args.seed, 'flip': args.flip, 'lr_schedule': args.lr_schedule, 'size': args.size,
              'precision': args.precision}
    if args.lr_schedule != 'constant':
        config['epochs'] = args.epochs   # the schedule spans the run
    # augmented batches, validation on the last test set, checkpoints and log beside the model
    myrun.train_classifier(model, data, output, config, args, strategy)


if __name__ == '__main__':
    mycli.run_main(main)
