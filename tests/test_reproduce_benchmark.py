"""reproduce.py end to end in its smoke recipe (skip when re-run, continue after Ctrl-C);
benchmark.py --quick runs and writes its JSON. No speed is asserted here."""
import json
import os

from helpers import script


def test_reproduce_smoke(real_data, tmp_path):
    out = tmp_path / 'run'
    r = script('reproduce.py', 'mnist', '--recipe', 'smoke', '--output', out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    table = (out / 'table.md').read_text()
    for row in ('Traditional', 'Proposal (heuristic mask)', 'Proposal (U-Net mask)', 'Paper: Proposal'):
        assert f'| {row} |' in table
    assert '| Paper: Proposal | - | 92.3 | 76.8 | 93.1 | 93.7 | 70.8 | 86.2 | 85.5 | - |' in table
    csv = (out / 'table.csv').read_text().splitlines()
    assert csv[0] == 'training,clean,stripes,board,border,circles,clock,random,mean,worst'
    vals = [float(v) for v in csv[1].split(',')[1:]]
    assert len(vals) == 9 and all(0 <= v <= 100 for v in vals)
    assert abs(vals[7] - sum(vals[1:7]) / 6) < 0.02           # mean of the six
    assert vals[8] <= min(vals[1:7]) + 1e-9                  # all six right is rarer than any one
    assert (out / 'figure.png').stat().st_size > 1000
    for f in ('phase1.keras', 'phase2.keras', 'phase3-heuristic.keras', 'phase3-unet.keras', 'phase3-unet-back.keras'):
        assert (out / f).exists(), f
    # the same command again: every phase is skipped, the table is rebuilt
    before = {f: (out / f).stat().st_mtime_ns for f in ('phase1.keras', 'phase3-unet.keras')}
    r = script('reproduce.py', 'mnist', '--recipe', 'smoke', '--output', out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {f: (out / f).stat().st_mtime_ns for f in before} == before
    assert json.loads((out / 'done.json').read_text())[str(out / 'phase1.keras')].startswith('train1.py')


def test_benchmark_quick(real_data, tmp_path):
    out = tmp_path / 'bench.json'
    r = script('benchmark.py', '--quick', '--output', out, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(out.read_text())
    cases = {(c['case'], c['batch']) for c in info['results']}
    assert ('phase 1', 8) in cases and ('phase 1, pure compute (reference)', 128) in cases
    assert ('phase 3 adv otsu', 8) in cases and ('augmentation pipeline', 128) in cases
    assert ('phase 3 adv otsu clean 0.5', 8) in cases
    assert all(c['images_per_s'] > 0 for c in info['results'])
    assert info['matmul_peak_gflops'] > 0 and info['tensorflow']
    # measured the way the scripts run: TensorFlow started by mydatasets.quiet_tensorflow, oneDNN on
    # (an import of tensorflow before mymodels once left it off and the figures 30-60% low)
    assert info['onednn'] is True
    assert 'images/s' in r.stdout
