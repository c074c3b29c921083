"""tf.distribute: MirroredStrategy over 2 logical CPU devices gives the same training steps as one
device; every phase script runs under it; MultiWorkerMirroredStrategy with two worker processes
on 127.0.0.1 (phase 3 alone, and reproduce.py training phase 1) finishes, the workers agree, only the chief writes."""
import json
import os
import socket
import subprocess
import sys

import pytest

from helpers import ROOT, csv_numbers, inprocess, one_line_error, reuse_chain, script

SMALL = ['--subset', 256, '--test-subset', 64, '--batchsize', 16, '--seed', 1]


def env(**kw):
    e = dict(os.environ)
    e.pop('TF_CONFIG', None)
    e.update({k: str(v) for k, v in kw.items()})
    return e


@pytest.mark.slow
def test_mirrored_step_equals_default(real_data):
    """Each phase (phase 3 also with its white-background penalty active and half the images
    keeping their own background, so the replicas paint different numbers), two steps through
    fit(): the weights after them agree with one device's to float noise. With plain SGD a wrong
    loss scaling (sum instead of mean over replicas) would double the step, so it shows."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, 'tests', 'replica_check.py')], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env(BIAL_CPU_DEVICES=2))
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out.pop('replicas') == 2
    assert sorted(out) == sorted([f'{p}/sgd' for p in ['phase1', 'phase2', 'phase3', 'phase3_white_clean']]
                                 + ['phase3_white_clean/adam'])
    for case, v in out.items():
        assert v['moved'] > 1e-3, case            # the steps did train
        assert v['max_diff'] < 2e-5, (case, v)    # and two replicas did exactly what one device did


@pytest.fixture(scope='module')
def mirrored_chain(real_data, tmp_path_factory):
    d = tmp_path_factory.mktemp('mirrored')
    e = env(BIAL_CPU_DEVICES=2)
    runs = {
        'p1': script('train1.py', 'mnist_backgrounds', '--strategy', 'mirrored', '--epochs', 1, '--output', d / 'p1.keras',
                     *SMALL, env=e)}
    runs['p2'] = script('train2.py', 'mnist_backgrounds', d / 'p1.keras', 'otsu', '--strategy', 'mirrored', '--epochs', 1,
                        '--output', d / 'p2.keras', *SMALL, env=e)
    runs['p3'] = script('train3.py', 'mnist_backgrounds', d / 'p1.keras', d / 'p2.keras', 'otsu', 'adv', '--strategy',
                        'mirrored', '--epochs', 1, '--output', d / 'p3.keras', '--replay', 0.25, '--history', 32, *SMALL,
                        env=e)
    return d, runs


@pytest.mark.slow
def test_every_phase_runs_mirrored(mirrored_chain):
    import mymodels
    d, runs = mirrored_chain
    for name, r in runs.items():
        assert r.returncode == 0, (name, r.stderr[-2000:])
        assert '2 replica(s) in sync, 8 images each per step' in r.stderr, name
        assert len(csv_numbers(r.stdout.strip().splitlines()[-1])) == 8
    mymodels.load(str(d / 'p1.keras'), 'classifier', (32, 32, 1), 10)
    mymodels.load(str(d / 'p2.keras'), 'unet', (32, 32, 1))
    mymodels.load(str(d / 'p3.keras'), 'classifier', (32, 32, 1), 10)
    assert (d / 'p3-back.keras').exists() and not (d / 'p3-checkpoint').exists()


@pytest.mark.slow
def test_batch_must_split_evenly(real_data, tmp_path):
    r = script('train1.py', 'mnist_backgrounds', '--strategy', 'mirrored', '--batchsize', 15, '--subset', 256,
               '--output', tmp_path / 'p.keras', env=env(BIAL_CPU_DEVICES=2))
    assert 'multiple of the 2 replicas' in one_line_error(r)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('config, says', [(None, 'needs TF_CONFIG'), ('{"cluster": ', 'not a usable cluster'),
                                          ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", '
                                           '"index": 3}}', 'no worker number 3')])
def test_multiworker_needs_a_cluster(tmp_path, config, says, monkeypatch):
    """Unit tier: in-process, the cluster description is checked before any strategy is made."""
    monkeypatch.delenv('TF_CONFIG', raising=False)
    r = inprocess('train1.py', 'mnist_backgrounds', '--strategy', 'multiworker', '--output', tmp_path / 'p.keras',
                  env={'TF_CONFIG': config} if config else None)
    assert says in one_line_error(r)
    assert not list(tmp_path.iterdir())


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def failure(*outputs):
    """What a failed worker said: its lines that name an error or an abort (the first cause, e.g.
    TensorFlow's peer health check aborting the collectives, comes long before the traceback's
    end), then the end of its stderr."""
    said = lambda err: [l[:300] for l in err.splitlines() if 'rror' in l or 'abort' in l.lower()][:8]
    return [(said(err), err[-1000:]) for _, err in outputs]


def two_workers(name, *args, timeout=600):
    """Run `python NAME ARGS` as worker 0 and worker 1 of a two-machine cluster on 127.0.0.1."""
    hosts = [f'127.0.0.1:{p}' for p in free_ports(2)]
    procs = []
    for i in range(2):
        config = json.dumps({'cluster': {'worker': hosts}, 'task': {'type': 'worker', 'index': i}})
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, name), *map(str, args)], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env(TF_CONFIG=config)))
    try:
        return [p.communicate(timeout=timeout) for p in procs], [p.returncode for p in procs]
    finally:
        for p in procs:
            p.kill()


@pytest.mark.slow
def test_multiworker_phase3(smoke_chain, tmp_path):
    """Phase 3 (the adversarial game) under two workers, from the smoke chain's phase-1 model:
    every epoch's figures agree between the workers; only the chief writes. (Phase 1 under two
    workers: test_reproduce_multiworker.)"""
    import mymodels
    p3 = tmp_path / 'p3.keras'
    (o0, o1), rcs = two_workers('train3.py', 'mnist_backgrounds', smoke_chain['dir'] / 'phase1.keras', 'heuristic',
                                'otsu', 'adv', '--strategy', 'multiworker', '--epochs', 2, *SMALL, '--output', p3)
    assert rcs == [0, 0], failure(o0, o1)
    lines = [o[0].strip().splitlines() for o in (o0, o1)]
    assert lines[0][-1] == lines[1][-1]
    epochs = [[l.split('/step - ', 1)[1] for l in ls if 'acc_clean' in l] for ls in lines]   # every epoch agrees
    assert len(epochs[0]) == 2 and epochs[0] == epochs[1]
    assert 'saved' in o0[1] and 'not the chief' in o1[1]
    mymodels.load(str(p3), 'classifier', (32, 32, 1), 10)
    # only the chief wrote: the model, its generator, one log; no checkpoints or temporary files left
    assert sorted(f.name for f in tmp_path.iterdir()) == ['p3-back.keras', 'p3-log.csv', 'p3.keras']


@pytest.mark.slow
def test_reproduce_multiworker(smoke_chain, tmp_path):
    """reproduce.py with two workers: the smoke chain copied without its U-Net row, which both
    workers then train together (train3.py under MultiWorkerMirroredStrategy: the other phases
    are recorded as done and skipped; nothing reads the U-Net row's model); the chief alone writes
    the model and the tables, and evaluates again only the new model."""
    out = reuse_chain(smoke_chain['dir'], tmp_path / 'run', 'runs/mnist-smoke', drop=['phase3-unet'])
    for f in out.glob('table*'):
        f.unlink()
    old = json.loads((out / 'evaluation.json').read_text())
    (o0, o1), rcs = two_workers('reproduce.py', 'mnist', '--recipe', 'smoke', '--strategy', 'multiworker',
                                '--output', out)
    assert rcs == [0, 0], failure(o0, o1)
    assert 'wrote' in o0[0] and 'the chief writes' in o1[0]
    done = [[l.split(':')[0] for l in o[0].splitlines() if l.endswith(': done')] for o in (o0, o1)]
    assert done[0] == done[1] == ['phase 3 (U-Net mask)']   # only it trained, on both workers
    table = (out / 'table.md').read_text()
    assert table.count('| Proposal (') == 4 and table.count('| Traditional |') == 2   # both tables
    assert all((out / f).exists() for f in ['phase1.keras', 'phase3-unet-log.csv', 'phase2.keras', 'phase3-heuristic.keras',
                                             'phase3-unet.keras', 'attention.keras', 'figure.png', 'table.csv'])
    new = json.loads((out / 'evaluation.json').read_text())
    assert [row for row in new if new[row] != old[row]] == ['Proposal (U-Net mask)']
