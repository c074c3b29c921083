"""Evaluate a saved classifier: one CSV line, the accuracy on the training set, then on each
test set, in order (for mnist_backgrounds: clean, then the six backgrounds).

    python evaluate.py mnist_backgrounds mnist-phase3-adv.keras

Accepts this project's .keras/.h5 files and the published code's Keras 2 .h5 files.
"""
import mydatasets as md

EVAL_BATCHSIZE = 1024


def main():
    p = md.ArgumentParser(description=__doc__.split('\n')[0], epilog=f'Data sets: {", ".join(md.NAMES)}.')
    p.add_argument('dataset', type=md.dataset_arg, help='data set name')
    p.add_argument('model', help='classifier file (.keras or .h5)')
    p.add_argument('--batchsize', type=md.positive_int, default=EVAL_BATCHSIZE, help='evaluation batch size')
    p.add_argument('--subset', type=md.positive_int, help='use only the first N training images')
    p.add_argument('--test-subset', type=md.positive_int, help='use only the first N images of each test set')
    args = p.parse_args()

    import mymodels
    mymodels.setup()
    (Xtr, Ytr), tss = md.subset(md.load(args.dataset), args.subset, args.test_subset)
    model = mymodels.load(args.model, 'classifier', Xtr.shape[1:], int(Ytr.max()) + 1)
    names = ['train'] + md.DATASETS[args.dataset][1]
    acc = mymodels.Evaluator(list(zip(names, [(Xtr, Ytr)] + tss)), args.batchsize)(model)
    print(','.join(str(a) for a in acc.values()))


if __name__ == '__main__':
    md.run_main(main)
