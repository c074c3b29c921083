"""Reproduce the paper's MNIST table with one command: train every row, evaluate, print the table.

    python reproduce.py mnist                 # the fast recipe (default), results in runs/mnist-fast/
    python reproduce.py fashionmnist --recipe paper

Rows: Traditional (phase 1 only); Proposal with the heuristic mask (phase 1 -> phase 3, adversarial
backgrounds); Proposal with the U-Net mask (phase 1 -> phase 2 -> phase 3). Columns: clean test set,
the six backgrounds, their mean, and the worst case (the share of test digits classified correctly
under all six backgrounds). Writes table.md, table.csv, figure.png and every model into the output
folder. Each phase runs as its own script (train1/2/3.py), so its model can be used by hand;
re-running skips the phases already done with the same settings, and after Ctrl-C the same command
continues where it stopped.
"""
import json
import os
import platform
import subprocess
import sys
import threading
import time

import mydatasets as md

# The paper's table (accuracy %, MNIST test set with each background)
PAPER = {'Traditional': [38.0, 24.3, 61.4, 32.9, 19.7, 11.2], 'Proposal': [92.3, 76.8, 93.1, 93.7, 70.8, 86.2]}
BACKGROUND_NAMES = ['Stripes', 'Board', 'Border', 'Circles', 'Clock', 'Random']

# Recipes: arguments of each phase script. 'paper' is the published setting; 'fast' was chosen on a
# validation split of the training set (see the README, "Reproducing the paper"); 'smoke' only
# proves that the whole chain runs (a few minutes, used by the tests).
RECIPES = {
    'paper': {'phase1': ['--epochs', 100, '--batchsize', 8],
              'phase2': ['--epochs', 100, '--batchsize', 8],
              'phase3': ['--epochs', 100, '--batchsize', 8]},
    'fast': {'phase1': ['--epochs', 5, '--batchsize', 32, '--lr-schedule', 'cosine'],
             'phase2': ['--epochs', 1, '--batchsize', 8, '--subset', 20000],
             'phase3': ['--epochs', 3, '--batchsize', 8, '--lr-schedule', 'cosine', '--gen-lr', 1e-4,
                        '--clean-share', 0.5, '--average', 6000]},
    'smoke': {'phase1': ['--epochs', 1, '--batchsize', 32, '--subset', 512, '--test-subset', 200],
              'phase2': ['--epochs', 1, '--batchsize', 32, '--subset', 256, '--test-subset', 200],
              'phase3': ['--epochs', 1, '--batchsize', 32, '--subset', 512, '--test-subset', 200,
                         '--clean-share', 0.25, '--average', 8]},
}
MASK_MODE = 'otsu'   # binarization of the masks in phase 3
SHORT = {'Traditional': 'Traditional', 'Proposal (heuristic mask)': 'Heuristic', 'Proposal (U-Net mask)': 'U-Net'}


def steps(data, out, recipe, seed):
    """(name, script, arguments, epochs, model file) of every phase, in order."""
    r = RECIPES[recipe]
    common = ['--seed', seed]
    p1, p2 = os.path.join(out, 'phase1.keras'), os.path.join(out, 'phase2.keras')
    return [
        ('phase 1', 'train1.py', [data] + r['phase1'] + common, p1),
        ('phase 3 (heuristic mask)', 'train3.py', [data, p1, 'heuristic', MASK_MODE, 'adv'] + r['phase3'] + common,
         os.path.join(out, 'phase3-heuristic.keras')),
        ('phase 2', 'train2.py', [data, p1, MASK_MODE] + r['phase2'] + common, p2),
        ('phase 3 (U-Net mask)', 'train3.py', [data, p1, p2, MASK_MODE, 'adv'] + r['phase3'] + common,
         os.path.join(out, 'phase3-unet.keras')),
    ]


def epochs_of(args):
    return int(args[args.index('--epochs') + 1])


def logged_epochs(model):
    log = os.path.splitext(model)[0] + '-log.csv'
    try:
        with open(log) as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def run_step(script, args, model, bar, done_before, strategy='default'):
    """Run one phase script (resuming its own checkpoint if there is one), moving the bar as its
    CSV log grows. Returns its output; raises UserError with its last error line if it fails."""
    cmd = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), script)] + \
        [str(a) for a in args] + ['--output', model, '--resume', '--strategy', strategy]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = {}
    readers = [threading.Thread(target=lambda k, s: out.__setitem__(k, s.read()), args=(k, s), daemon=True)
               for k, s in (('stdout', proc.stdout), ('stderr', proc.stderr))]
    for t in readers:
        t.start()
    while proc.poll() is None:
        bar.n = done_before + logged_epochs(model)
        bar.refresh()
        time.sleep(1)
    for t in readers:
        t.join()
    if proc.returncode == 130 or proc.returncode == -2:
        raise KeyboardInterrupt
    if proc.returncode != 0:
        last = [l for l in out.get('stderr', '').splitlines() if l.strip()][-1:] or [f'exit status {proc.returncode}']
        raise md.UserError(f'{script} failed: {last[0]}')
    return out['stdout']


def wait_for_chief(state_path, model, key, timeout=600):
    """A worker that is not the chief goes on to the next phase (which reads this phase's model)
    only once the chief has saved the model and recorded it."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            with open(state_path) as f:
                if json.load(f).get(model) == key and os.path.exists(model):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise md.UserError(f'the chief did not record {model} in {state_path} within {timeout} s; '
                       'do all workers see the same output folder?')


def evaluate(models, data, test_subset):
    """Per model: accuracy (%) on the clean test set and the six backgrounds, their mean, and the
    worst case: the share of test digits classified correctly under all six backgrounds."""
    import numpy as np
    import mymodels
    _, tss = md.subset(md.load(data), None, test_subset)
    rows = {}
    for name, path in models.items():
        model = mymodels.load(path, 'classifier', tss[0][0].shape[1:], 10)
        correct = [np.argmax(model.predict(X, batch_size=512, verbose=0), 1) == Y for X, Y in tss]
        accs = [100 * c.mean() for c in correct]
        rows[name] = accs + [float(np.mean(accs[1:])), 100 * float(np.all(correct[1:], 0).mean())]
    return rows, tss


def write_outputs(out, data, recipe, rows, tss, wall, settings):
    import numpy as np
    cols = ['Clean'] + BACKGROUND_NAMES + ['Mean', 'Worst']
    fmt = lambda v: '-' if v is None else f'{v:.1f}'
    # the paper's table is MNIST's: on another data set say so in the row's name
    tag = 'Paper' if data == 'mnist_backgrounds' else 'Paper (MNIST)'
    paper = {f'{tag}: {k}': [None] + v + [float(np.mean(v)), None] for k, v in PAPER.items()}
    table = [f'# {data}: the paper\'s table, reproduced\n',
             '| training | ' + ' | '.join(cols) + ' |', '|---' * (len(cols) + 1) + '|']
    for name, vals in list(rows.items()) + list(paper.items()):
        table.append(f'| {name} | ' + ' | '.join(fmt(v) for v in vals) + ' |')
    table += ['', 'Accuracy (%) on the test set, clean and with each background; Mean: over the six backgrounds; '
              'Worst: test images classified correctly under all six.', '',
              f'Recipe: `{recipe}`; ' + '; '.join(f'{k}: `{" ".join(map(str, v))}`' for k, v in settings.items()),
              f'Wall time: {wall / 60:.1f} min on {platform.node()} ({cpu()}, {os.cpu_count()} cores), '
              f'Python {platform.python_version()}.', '']
    md.write_text(os.path.join(out, 'table.md'), '\n'.join(table))
    csv = ['training,' + ','.join(c.lower() for c in cols)] + \
        [f'{name},' + ','.join('' if v is None else f'{v:.2f}' for v in vals) for name, vals in list(rows.items()) + list(paper.items())]
    md.write_text(os.path.join(out, 'table.csv'), '\n'.join(csv) + '\n')
    figure(os.path.join(out, 'figure.png'), tss, rows)
    return '\n'.join(table)


def figure(path, tss, rows, scale=4):
    """One test digit under each background, each method's accuracy below it (the paper's figure)."""
    import numpy as np
    from PIL import Image, ImageDraw   # Pillow comes with scikit-image
    i = 0
    imgs = [1 - X[i, ..., 0] for X, _ in tss]
    H = imgs[0].shape[0] * scale
    names = list(rows)
    line, pad, colw = 12, 6, max(H, 110)
    canvas = Image.new('L', (colw * len(imgs), H + 18 + line * (len(names) + 1) + pad), 255)
    draw = ImageDraw.Draw(canvas)
    for j, (img, title) in enumerate(zip(imgs, ['Clean'] + BACKGROUND_NAMES)):
        x0 = j * colw + (colw - H) // 2
        canvas.paste(Image.fromarray(np.uint8(np.kron(img, np.ones((scale, scale))) * 255)), (x0, 16))
        draw.text((j * colw + 4, 2), title, fill=0)
        for k, name in enumerate(names):
            draw.text((j * colw + 4, H + 20 + k * line), f'{SHORT.get(name, name)} {rows[name][j]:.1f}', fill=0)
    draw.text((4, H + 20 + len(names) * line), '; '.join(f'{SHORT.get(n, n)}: {n}' for n in names), fill=90)
    buf = np.asarray(canvas, np.float32) / 255
    md.save_png(path, buf)


def cpu():
    try:
        with open('/proc/cpuinfo') as f:
            return next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        return platform.machine()


def main():
    p = md.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('dataset', choices=['mnist', 'fashionmnist'], help='MNIST or Fashion-MNIST (with the six backgrounds)')
    p.add_argument('--recipe', choices=list(RECIPES), default='fast', help='fast (default), paper, or smoke (a quick check)')
    p.add_argument('--output', help='folder for models, logs and the table (default: runs/DATASET-RECIPE)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--strategy', choices=md.STRATEGIES, default='default',
                   help='for every phase: one device, all local GPUs, or the machines in TF_CONFIG (then run '
                   'this same command on each, with an output folder they all see)')
    args = p.parse_args()
    # several machines: every one runs each phase; only the chief writes models and the table
    chief = md.is_cluster_chief() if args.strategy == 'multiworker' else True
    data = f'{args.dataset}_backgrounds'
    out = args.output or os.path.join('runs', f'{args.dataset}-{args.recipe}')
    md.check_writable_dir(os.path.dirname(os.path.abspath(out)), f'output {out}')
    os.makedirs(out, exist_ok=True)
    md.load(data)   # fail early (one line) if the data cannot be had; the phases reuse its cache

    from tqdm import tqdm
    plan = steps(data, out, args.recipe, args.seed)
    state_path = os.path.join(out, 'done.json')
    done = json.load(open(state_path)) if os.path.exists(state_path) else {}
    total = sum(epochs_of(a) for _, _, a, _ in plan)
    t0 = time.time()
    wall = done.get('_wall', 0.0)
    bar = tqdm(total=total, unit='epoch', desc='reproduce', disable=None)
    finished = 0
    for name, script, a, model in plan:
        key = ' '.join(map(str, [script] + a))
        if done.get(model) == key and os.path.exists(model):
            finished += epochs_of(a)
            bar.n = finished
            bar.refresh()
            continue
        bar.set_description(name)
        stdout = run_step(script, a, model, bar, finished, args.strategy)
        if chief:
            done[model] = key
            done['_wall'] = wall + time.time() - t0
            md.write_text(state_path, json.dumps(done, indent=1))
        else:
            wait_for_chief(state_path, model, key)
        finished += epochs_of(a)
        bar.n = finished
        bar.refresh()
        tqdm.write(f'{name}: {stdout.strip().splitlines()[-1]}')
    bar.close()
    if not chief:
        print(f'this worker took part in every phase; the chief writes the models and {out}/table.md')
        return
    wall += time.time() - t0
    done['_wall'] = wall
    md.write_text(state_path, json.dumps(done, indent=1))

    test_subset = None
    if args.recipe == 'smoke':
        test_subset = RECIPES['smoke']['phase3'][RECIPES['smoke']['phase3'].index('--test-subset') + 1]
    models = {'Traditional': plan[0][3], 'Proposal (heuristic mask)': plan[1][3], 'Proposal (U-Net mask)': plan[3][3]}
    rows, tss = evaluate(models, data, test_subset)
    settings = {k: v for k, v in RECIPES[args.recipe].items()}
    print(write_outputs(out, data, args.recipe, rows, tss, wall, settings))
    print(f'wrote {out}/table.md, table.csv, figure.png')


if __name__ == '__main__':
    md.run_main(main)
