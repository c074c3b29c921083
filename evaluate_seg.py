"""Write the masks of a saved mask generator: one PNG per training image, the mask >= 0.5 as 0/255.

    python evaluate_seg.py mnist_backgrounds mnist-phase2.keras --output seg/

The PNGs are named seg-N.png (N = the image's index in the training set).
"""
import os
import sys

import mycli
import mydatasets as md

BATCHSIZE = 512


def main():
    p = mycli.ArgumentParser(__doc__, epilog=md.EPILOG)
    p.add_argument('dataset', type=mycli.checked(md.check_name), help='data set name')
    p.add_argument('unet', help='mask generator file from phase 2 (.keras or .h5)')
    p.add_argument('--output', help='folder for the PNGs (made if missing; default: seg)')
    p.add_argument('--batchsize', type=mycli.positive_int, default=BATCHSIZE, help='prediction batch size')
    p.add_argument('--subset', type=mycli.positive_int, help='only the first N training images')
    mycli.size_arg(p)
    mycli.precision_arg(p)
    args = p.parse_args()
    output = mycli.output_dir(args.output, 'seg')

    data = md.dataset(args.dataset, args.subset, size=args.size)
    mycli.start_tensorflow()
    from tqdm import tqdm
    import mydatagen
    import myrun
    from myfiles import save_png
    myrun.setup()
    unet = myrun.load_model(args.unet, 'unet', data, args.precision)
    os.makedirs(output, exist_ok=True)
    X = data.train[0]
    for start in tqdm(range(0, len(X), args.batchsize), desc='masks', unit='batch', disable=None):
        M = unet.predict(mydatagen.to_float(X[start:start + args.batchsize]), verbose=0) >= 0.5
        for i, m in enumerate(M, start):
            save_png(os.path.join(output, f'seg-{i}.png'), m.astype('float32'))
    print(f'wrote {len(X)} masks to {output}', file=sys.stderr)


if __name__ == '__main__':
    mycli.run_main(main)
