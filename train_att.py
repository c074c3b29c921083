"""The literature baseline: train an attention-guided CNN (AG-CNN, Guan et al. 2018) as the authors did.

    python train_att.py mnist_backgrounds --output mnist-attention.keras                 # global branch too
    python train_att.py mnist_backgrounds --global-model mnist-phase1.keras --output mnist-attention.keras

The global branch is a classifier trained exactly as phase 1 (or --global-model, a phase-1 file),
then frozen. Its last pooled features give a heatmap (max over channels of |features|, min-max
normalised per image); the cells >= --tau, the largest 8-connected region, and that region's box
of the image is the crop, resized to --crop x --crop (default: half the image side; the published
code fed each crop at its own size, one image a batch: on MNIST 8 to 32 px a side, about 18 px
on average, docs/attention.md). A local branch (three stride-2 Conv 3x3 of
128, 256, 512 filters, global average pooling) sees the crop; its features and the global
average of the global branch's are fused (Dense 2048, Dense 256, Dense K). Local branch and
fusion are trained together on augmented images, with phase 1's settings (Adam 1e-3). The crop
is computed inside the model, so the saved file is a classifier like any other: evaluate.py
takes it. At the end one CSV line (the command, the accuracy on the training set, then on each
test set) and the model saved to --output (a global branch trained here: beside it, NAME-global).
"""
import mycli
import mydatasets as md
import mylock
from mysettings import Attention as Settings, Training   # every default, and what a checkpoint records

LR = 1e-3   # the local branch and fusion, as phase 1's classifier


def parser():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    p.add_argument('--global-model', metavar='FILE',
                   help='a phase-1 classifier to use as the global branch (default: train one first, as phase 1)')
    p.add_argument('--tau', type=mycli.threshold, help='heatmap threshold in (0, 1] (default %(default)s)')
    p.add_argument('--crop', type=mycli.positive_int, help='side the attention crops are resized to (default: half '
                   'the image side, near the mean size of the published code\'s unresized crops)')
    mycli.schedule_args(p, 'classifier')
    p.add_argument('--weights', choices=['imagenet', 'none'],
                   help='a global branch trained here with VGG19 (images >= 128 px): ImageNet weights or random')
    p.add_argument('--output', help='model file, .keras or .h5 (default: DATASET-attention.keras)')
    mycli.training_args(p, Settings)
    return p


def main():
    s = Settings.from_args(parser().parse_args())
    mylock.hold(s.output, s.strategy)   # one run per output: a second one stops here
    global_output = s.companion('global')

    mycli.start_tensorflow(s.threads)
    import os
    import mymodels
    import myrun
    strategy, data, steps = myrun.start(s)

    # the global branch: given, or trained here exactly as phase 1 (a finished one is kept on --resume)
    if s.global_model or (s.resume and os.path.exists(global_output)):
        with strategy.scope():
            global_model = myrun.load_model(s.global_model or global_output, 'classifier', data, s.precision)
    else:
        with strategy.scope():
            global_model = mymodels.in_precision(mymodels.build_classifier(
                data.shape, data.classes, None if s.weights == 'none' else 'imagenet'), s.precision)
            myrun.prepare_classifier(global_model, mymodels.LEARNING_RATE[mymodels.classifier_kind(data.shape)], s, steps)
        myrun.train_classifier(global_model, data, global_output, s.record(Training), s, strategy)

    with strategy.scope():   # the global branch frozen inside; the local branch and fusion learn
        crop = s.crop or data.shape[0] // 2
        model = mymodels.in_precision(mymodels.attention(global_model, data.classes, s.tau, crop), s.precision)
        model = myrun.prepare_classifier(model, LR, s, steps)
    myrun.train_classifier(model, data, s.output, s.record(), s, strategy)


if __name__ == '__main__':
    mycli.run_main(main)
