"""Evaluate a saved classifier: one CSV line, its accuracy on the training set, then on each test set.

    python evaluate.py mnist_backgrounds mnist-phase3-adv.keras               # train, clean, six backgrounds
    python evaluate.py mnist_backgrounds mnist-phase3-adv.keras --no-halo     # and the six without the rim

Accepts this project's .keras/.h5 files (the attention-guided CNN of train_att.py too) and the
published code's Keras 2 .h5 files; a data set may be a folder of one's own (myfolders.py), whose
class names must be those the model was trained on. The test sets come in the data set's order (for mnist_backgrounds: clean, then the six backgrounds);
--no-halo appends the first test set with each of the six backgrounds pasted without the dark
rim that the paper's test leaves around the object (grayscale data sets only).
"""
import mycli
import mydatasets as md

EVAL_BATCHSIZE = 1024


def main():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    p.add_argument('model', help='classifier file (.keras or .h5)')
    p.add_argument('--no-halo', action='store_true',
                   help='also the six test backgrounds pasted without the dark rim around the object')
    p.add_argument('--names', action='store_true', help='print a header line with the name of each set first')
    p.add_argument('--batchsize', type=mycli.positive_int, default=EVAL_BATCHSIZE, help='evaluation batch size')
    p.add_argument('--subset', type=mycli.positive_int, help='use only the first N training images')
    p.add_argument('--test-subset', type=mycli.positive_int, help='use only the first N images of each test set')
    mycli.size_arg(p)
    mycli.precision_arg(p)
    args = p.parse_args()

    data = md.dataset(args.dataset, args.subset, args.test_subset, args.size)
    if args.no_halo:
        data = md.with_nohalo(data)
    mycli.start_tensorflow()
    import myrun
    myrun.setup()
    model = myrun.load_model(args.model, 'classifier', data, args.precision)
    acc = myrun.Evaluator(data.sets, args.batchsize)(model)
    if args.names:
        print(','.join(acc))
    print(','.join(str(a) for a in acc.values()))


if __name__ == '__main__':
    mycli.run_main(main)
