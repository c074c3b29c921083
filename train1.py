"""Phase 1: train the classifier alone on the augmented training set.

    python train1.py mnist_backgrounds --epochs 100 --batchsize 8 --output mnist-phase1.keras

Images under 128 px use the small VGG-style classifier, from 128 px the ImageNet VGG19 one.
Validation on the last test set after each epoch; at the end one CSV line (the command, the
accuracy on the training set, then on each test set) and the model saved to --output.
"""
import mycli
import mydatasets as md
import mylock
from mysettings import Phase1 as Settings   # every default, and what a checkpoint records


def parser():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    mycli.schedule_args(p, 'classifier')
    p.add_argument('--output', help='model file, .keras or .h5 (default: DATASET-phase1.keras)')
    p.add_argument('--weights', choices=['imagenet', 'none'],
                   help='VGG19 start (images >= 128 px): ImageNet weights (a download) or random')
    mycli.training_args(p, Settings)
    return p


def main():
    s = Settings.from_args(parser().parse_args())
    mylock.hold(s.output, s.strategy)   # one run per output: a second one stops here

    mycli.start_tensorflow(s.threads)
    import mymodels
    import myrun
    strategy, data, steps = myrun.start(s)
    with strategy.scope():   # models and optimisers live on every replica
        model = mymodels.in_precision(mymodels.build_classifier(
            data.shape, data.classes, None if s.weights == 'none' else 'imagenet'), s.precision)
        myrun.prepare_classifier(model, mymodels.LEARNING_RATE[mymodels.classifier_kind(data.shape)], s, steps)
    # augmented batches, validation on the last test set, checkpoints and log beside the model
    myrun.train_classifier(model, data, s.output, s.record(), s, strategy)


if __name__ == '__main__':
    mycli.run_main(main)
