"""reproduce.py end to end in its smoke recipe, as a new user runs it (fresh copy, no --output):
the tables, the figures, the noise sweep; skip when re-run; several seeds; the validation
protocol. benchmark.py --quick runs and writes its JSON. No speed is asserted here."""
import json
import os
import subprocess

import numpy as np
import pytest

import myreport
from helpers import one_line_error, reuse_chain, script

pytestmark = pytest.mark.slow


def test_reproduce_smoke_in_a_fresh_copy(smoke_chain):
    out = smoke_chain['dir']   # COPY/runs/mnist-smoke: made by reproduce.py, the clone had no runs/
    table = (out / 'table.md').read_text()
    for row in ('Traditional', 'Proposal (heuristic mask)', 'Proposal (U-Net mask)', 'Attention-guided CNN',
                'Paper: Proposal'):
        assert f'| {row} |' in table
    assert '| Paper: Proposal | - | 92.3 | 76.8 | 93.1 | 93.7 | 70.8 | 86.2 | 85.5 | - |' in table
    assert 'no dark rim' in table and '(seed 0)' in table and '±' not in table
    csv = (out / 'table.csv').read_text().splitlines()
    assert csv[0] == 'training,seed,' + ','.join(myreport.COLUMNS + myreport.NOHALO)
    assert csv[0].startswith('training,seed,clean,stripes,board,border,circles,clock,random,mean,worst,nohalo_stripes')
    vals = [float(v) for v in csv[1].split(',')[2:]]
    assert csv[1].startswith('Traditional,0,') and len(vals) == 17 and all(0 <= v <= 100 for v in vals)
    assert abs(vals[7] - sum(vals[1:7]) / 6) < 0.02           # mean of the six
    assert vals[8] <= min(vals[1:7]) + 1e-9                  # all six right is rarer than any one
    assert abs(vals[15] - sum(vals[9:15]) / 6) < 0.02 and vals[16] <= min(vals[9:15]) + 1e-9
    assert (out / 'figure.png').stat().st_size > 1000 and (out / 'figure-noise.png').stat().st_size > 1000
    noise = (out / 'noise.csv').read_text().splitlines()
    assert noise[0].split(',')[:3] == ['training', 'seed', 'rate_0.00'] and len(noise[0].split(',')) == 22
    assert len(noise) == 5 and float(noise[1].split(',')[2]) == pytest.approx(vals[0], abs=0.01)   # rate 0 = clean
    for f in ('phase1.keras', 'phase2.keras', 'phase3-heuristic.keras', 'phase3-unet.keras', 'phase3-unet-back.keras',
              'attention.keras'):
        assert (out / f).exists(), f
    # the rows trained first are evaluated while the last phase still trains (the same numbers as
    # evaluated after it: test_reproduce_one_phase_at_a_time_gives_the_same_models)
    assert 'Traditional: evaluated beside the training' in smoke_chain['stdout']


def test_reproduce_again_skips_every_phase(smoke_chain):
    out = smoke_chain['dir']
    before = {f: (out / f).stat().st_mtime_ns for f in ('phase1.keras', 'phase3-unet.keras', 'evaluation.json')}
    table = (out / 'table.csv').read_text()
    r = script('reproduce.py', 'mnist', '--recipe', 'smoke', cwd=smoke_chain['copy'], timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {f: (out / f).stat().st_mtime_ns for f in before} == before   # nor evaluated again
    assert not any(l.endswith((': done', ': started')) for l in r.stdout.splitlines())   # no phase ran
    assert (out / 'table.csv').read_text() == table
    record = json.loads((out / 'done.json').read_text())['runs/mnist-smoke/phase1.keras']   # phase 1's settings
    assert record['dataset'] == 'mnist_backgrounds' and record['subset'] == 512 and record['seed'] == 0


def test_reproduce_one_phase_at_a_time_gives_the_same_models(smoke_chain, sequential_chain):
    """--jobs 1 (one phase after the other) against the default (two side by side, the smoke
    chain): every model the same to the bit, and the same table."""
    import mymodels
    out = sequential_chain['dir']
    for f in ('phase1', 'phase2', 'phase3-heuristic', 'phase3-unet', 'phase3-unet-back', 'attention'):
        a, b = (mymodels.load(str(d / f'{f}.keras')).get_weights() for d in (out, smoke_chain['dir']))
        assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b)), f
    assert (out / 'table.csv').read_text() == (smoke_chain['dir'] / 'table.csv').read_text()


def test_reproduce_second_run_on_a_folder_stops_at_once(sequential_chain):
    """A second reproduce.py on a folder that a run is writing stops before it writes anything,
    with one line naming the running one (its process id), exit status 1; the first goes on to
    the table of a lone run (test_reproduce_one_phase_at_a_time_gives_the_same_models)."""
    second = sequential_chain['second']
    line = one_line_error(subprocess.CompletedProcess([], second['rc'], '', second['stderr']))
    assert second['rc'] == 1 and second['first_running']
    assert 'in use by another run' in line and f'process {second["first_pid"]} ' in line
    assert not (sequential_chain['dir'] / 'run.lock').exists()   # the first let go of it at its end


def test_reproduce_two_seeds_mean_and_spread(smoke_chain, seed1_chain, tmp_path):
    """--seeds 2: each seed in its own folder (seeds 0 and 1 are copies of the smoke chain and of
    the killed-and-resumed chain of seed 1, so nothing trains here), the table as mean ± standard
    deviation, the per-seed rows and the summary rows in table.csv."""
    out = tmp_path / 'two'
    reuse_chain(smoke_chain['dir'], out / 'seed-0', 'runs/mnist-smoke')
    reuse_chain(seed1_chain['dir'], out / 'seed-1', str(seed1_chain['dir']))
    # a model file that changed since its evaluation is evaluated again; the others are not
    os.utime(out / 'seed-1' / 'attention.keras', ns=(1, 1))
    kept = (out / 'seed-0' / 'evaluation.json').stat().st_mtime_ns
    old = json.loads((out / 'seed-1' / 'evaluation.json').read_text())
    r = script('reproduce.py', 'mnist', '--recipe', 'smoke', '--seeds', 2, '--output', out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any(l.endswith((': done', ': started')) for l in r.stdout.splitlines())   # nothing trained: both seeds reused
    assert (out / 'seed-0' / 'evaluation.json').stat().st_mtime_ns == kept
    new = json.loads((out / 'seed-1' / 'evaluation.json').read_text())
    changed = [row for row in new if new[row]['key'] != old[row]['key']]
    assert changed == ['Attention-guided CNN'] and new == {**old, changed[0]: new[changed[0]]}
    assert new[changed[0]]['columns'] == old[changed[0]]['columns']   # the same model, the same numbers
    csv = [l.split(',') for l in (out / 'table.csv').read_text().splitlines()]
    rows = {(c[0], c[1]): [float(v) for v in c[2:]] for c in csv[1:] if c[1]}
    for row in ('Traditional', 'Proposal (heuristic mask)', 'Proposal (U-Net mask)', 'Attention-guided CNN'):
        a, b = np.array(rows[(row, '0')]), np.array(rows[(row, '1')])
        np.testing.assert_allclose(rows[(row, 'mean')], (a + b) / 2, atol=0.006)
        np.testing.assert_allclose(rows[(row, "std")], np.abs(a - b) / np.sqrt(2), atol=0.011)   # of rounded cells
    first = (smoke_chain['dir'] / 'table.csv').read_text().splitlines()[1]
    assert first in (out / 'table.csv').read_text()   # seed 0's row is the one-seed run's
    assert (seed1_chain['dir'] / 'table.csv').read_text().splitlines()[1] in (out / 'table.csv').read_text()
    assert '±' in (out / 'table.md').read_text() and '2 seeds (0, 1)' in (out / 'table.md').read_text()
    assert len((out / 'noise.csv').read_text().splitlines()) == 1 + 4 * 2


def test_reproduce_validation_protocol(smoke_chain, tmp_path):
    """--validation reports every row on the validation sets and writes no test table. (The
    smoke chain's models stand in for the validation chain's: their records are rewritten so
    that no phase is trained again; what the phases do on mnist_validation is another test's.)"""
    out = reuse_chain(smoke_chain['dir'], tmp_path / 'val', 'runs/mnist-smoke',
                      replace=[('mnist_backgrounds', 'mnist_validation')])
    for f in out.glob('*.md'):
        f.unlink()
    r = script('reproduce.py', 'mnist', '--recipe', 'smoke', '--validation', '--output', out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not any(l.endswith((': done', ': started')) for l in r.stdout.splitlines())   # nothing trained
    lines = (out / 'validation.csv').read_text().splitlines()
    assert lines[0].startswith('training,seed,clean,grid,dots,waves,scribble,blobs,speckle,rising,falling,grid_rim')
    assert lines[0].endswith(',mean,min') and len(lines) == 5
    row = [float(v) for v in lines[1].split(',')[2:]]
    assert abs(row[-2] - sum(row[1:17]) / 16) < 0.02 and row[-1] == pytest.approx(min(row[1:17]), abs=0.01)
    assert not (out / 'table.md').exists()


def test_benchmark_quick(benchmark_run):
    out = benchmark_run['json']
    assert benchmark_run['rc'] == 0, benchmark_run['stderr'][-3000:]
    info = json.loads(out.read_text())
    cases = {(c['case'], c['batch']) for c in info['results']}
    assert ('phase 1', 8) in cases and ('phase 1, pure compute (reference)', 128) in cases
    assert ('augmentation pipeline', 128) in cases and ('fast: phase 3 (unet mask)', 8) in cases
    assert {('fast: phase 1', 32), ('fast: phase 2', 8), ('fast: phase 3 (heuristic mask)', 8),
            ('fast: attention-guided CNN', 32)} <= cases   # each phase at the recipe's own settings
    assert {('fast: phase 3 (unet mask computed once)', 8), ('U-Net masks of the training images, once (batch 1024)', 1024)} \
        <= cases   # --masks-once: the pass over the training images, then its steps
    assert all(c['images_per_s'] > 0 for c in info['results'])
    assert info['matmul_peak_gflops'] > 0 and info['tensorflow']
    # measured the way the scripts run: TensorFlow started by mycli.start_tensorflow, oneDNN on
    # (an import of tensorflow before it once left it off and the figures 30-60% low)
    assert info['onednn'] is True
    # by default the fast recipe's precision: bfloat16 on a CPU with AMX and no GPU, float32 elsewhere
    import mycli
    import reproduce
    assert reproduce.PRECISION['fast'] == 'auto'
    expected = mycli.recipe_precision('auto')   # (the rule itself: test_cli.py)
    assert 'images/s' in benchmark_run['stdout'] and info['precision'] == expected


def test_reproduce_biased_mnist_smoke(biased_chain):
    """reproduce.py biased_mnist end to end on the smoke recipe at one rho: each row trained (phase
    3 with the construction's masks), evaluated on the unbiased and biased test sets, the table
    with the published rows, the evaluations kept for a rerun."""
    out = biased_chain['dir']
    assert biased_chain['rc'] == 0, biased_chain['stderr'][-3000:]
    text = (out / 'table.md').read_text()
    assert "| Proposal (the construction's masks) |" in text and '| RUBi (published) | 93.6 |' in text
    rows = (out / 'table.csv').read_text().splitlines()
    assert rows[0] == 'training,rho,seed,unbiased,biased' and len(rows) == 1 + 3 + 3
    assert all(0 <= float(v) <= 100 for line in rows[1:4] for v in line.split(',')[3:5])
    record = json.loads((out / 'rho-0.99' / 'seed-0' / 'done.json').read_text())
    assert record[str(out / 'rho-0.99' / 'seed-0' / 'phase3-masks.keras')]['unet_model'] == 'masks'
    cache = json.loads((out / 'rho-0.99' / 'seed-0' / 'evaluation.json').read_text())
    assert set(cache) == {'Vanilla', "Proposal (the construction's masks)", 'Proposal (U-Net mask)'}
    assert all(set(e['accuracy']) == {'unbiased', 'biased'} for e in cache.values())   # what a rerun reads
