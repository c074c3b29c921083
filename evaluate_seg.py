"""Write the masks of a saved mask generator: one PNG per training image, the mask >= 0.5 as
0/255, named seg-N.png (N = the image's index) in the output folder.

    python evaluate_seg.py mnist_backgrounds mnist-phase2.keras --output seg/
"""
import mydatasets as md

BATCHSIZE = 512


def main():
    p = md.ArgumentParser(description=__doc__.split('\n')[0], epilog=f'Data sets: {", ".join(md.NAMES)}.')
    p.add_argument('dataset', type=md.dataset_arg, help='data set name')
    p.add_argument('unet', help='mask generator file from phase 2 (.keras or .h5)')
    p.add_argument('--output', default='seg', help='folder for the PNGs (made if missing; default: seg)')
    p.add_argument('--batchsize', type=md.positive_int, default=BATCHSIZE, help='prediction batch size')
    p.add_argument('--subset', type=md.positive_int, help='only the first N training images')
    args = p.parse_args()
    md.check_picture_dir(args.output)

    import os
    from tqdm import tqdm
    import mymodels
    mymodels.setup()
    (Xtr, _), _ = md.subset(md.load(args.dataset), args.subset)
    unet = mymodels.load(args.unet, 'unet', Xtr.shape[1:])
    os.makedirs(args.output, exist_ok=True)
    for start in tqdm(range(0, len(Xtr), args.batchsize), desc='masks', unit='batch', disable=None):
        M = unet.predict(Xtr[start:start + args.batchsize], verbose=0) >= 0.5
        for i, m in enumerate(M, start):
            md.save_png(os.path.join(args.output, f'seg-{i}.png'), m.astype('float32'))
    print(f'wrote {len(Xtr)} masks to {args.output}', file=md.sys.stderr)


if __name__ == '__main__':
    md.run_main(main)
