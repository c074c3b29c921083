"""Faults: SIGKILL at chosen and at random (seeded) moments of every phase and of reproduce.py,
then the same command again (phase 3, with replay and weight averaging, then ends exactly where
an uninterrupted run ends, and saves the averaged weights); Ctrl-C; an output folder that turns read-only; a corrupt checkpoint;
a loss that turns NaN. (Truncated data-cache files: test_datasets_real and test_downloads.)"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, csv_numbers, interruptible, one_line_error, run

pytestmark = pytest.mark.slow

COMMON = ['--epochs', 3, '--subset', 96, '--test-subset', 32, '--batchsize', 32, '--seed', 0]
POINTS = {'phase1': ['final-save', 'before-finish'], 'phase2': ['checkpoint-renamed@2'],
          'phase3': ['checkpoint-write@1', 'checkpoint-renamed@2', 'random']}


@pytest.fixture(scope='module')
def phase1_model(tmp_path_factory, real_data):
    import mymodels
    p = tmp_path_factory.mktemp('p1') / 'p1.keras'
    mymodels.save(mymodels.classifier((32, 32, 1), 10), str(p))
    return p


def command(phase, d, p1):
    out = d / 'm.keras'
    head = {'phase1': ['train1.py', 'mnist'],
            'phase2': ['train2.py', 'mnist', p1, 'otsu'],
            # phase 3 with every piece of state a checkpoint must carry: the generator, its
            # optimizer, the pool of past backgrounds, the running average of the weights and the
            # count of fresh generators (one at the start of each epoch here)
            'phase3': ['train3.py', 'mnist', p1, 'heuristic', 'otsu', 'adv', '--clean-share', 0.25, '--replay', 0.25,
                       '--history', 64, '--average', 5, '--generators', 3]}[phase]
    return [sys.executable, os.path.join(ROOT, head[0])] + [str(a) for a in head[1:] + COMMON + ['--output', out]]


@pytest.fixture(scope='module')
def phase3_whole(tmp_path_factory, phase1_model):
    """Phase 3 (the command of `command`) run once without interruption: (folder, its CSV line)."""
    d = tmp_path_factory.mktemp('whole')
    rc, out, err = run(command('phase3', d, phase1_model))
    assert rc == 0, err[-3000:]
    return d, out.strip().splitlines()[-1]


def leftovers(d):
    return [os.path.join(r, f) for r, ds, fs in os.walk(d) for f in fs + ds if '.part' in f or f.endswith('.tmp')]


def check_finished(d, epochs=3):
    import keras
    m = keras.models.load_model(d / 'm.keras')
    assert np.isfinite(m.predict(np.zeros((2,) + m.input_shape[1:], np.float32), verbose=0)).all()
    rows = (d / 'm-log.csv').read_text().splitlines()[1:]
    assert [r.split(',')[0] for r in rows] == [str(e) for e in range(1, epochs + 1)]   # none lost, none twice
    assert not leftovers(d) and not (d / 'm-checkpoint').exists()


@pytest.mark.parametrize('phase', ['phase1', 'phase2', 'phase3'])
def test_kill_anywhere_then_resume(phase, tmp_path, phase1_model, request):
    rng = random.Random(f'kills-{phase}')   # seeded: a failure replays
    cmd = command(phase, tmp_path, phase1_model)
    # the checkpoint and save code is shared by the phases (myrun), so each point is tried in one
    # phase: phase 3, whose state is the largest, in the middle of writing and after a checkpoint
    # and at a random moment; phase 2 after a checkpoint; phase 1 at the final save
    points = POINTS[phase]
    for i, point in enumerate(points):
        args = cmd + (['--resume'] if i else [])
        if point == 'random':
            rc, _, err = run(args, kill_after=rng.uniform(3, 12))
        else:
            rc, _, err = run(args, fault=point)
            assert rc == -signal.SIGKILL, f'{point} was not reached: {err[-2000:]}'
        if (tmp_path / 'm.keras').exists():     # a model under its real name is always whole
            import keras
            keras.models.load_model(tmp_path / 'm.keras')
    rc, out, err = run(cmd + ['--resume'])
    assert rc == 0, err[-3000:]
    check_finished(tmp_path)
    if phase == 'phase3':   # resumed three times, it ends exactly where the uninterrupted run does
        whole = request.getfixturevalue('phase3_whole')[1]
        assert csv_numbers(out.strip().splitlines()[-1]) == csv_numbers(whole)


def test_phase3_saves_the_averaged_weights(phase3_whole):
    """--average: the averaged weights are what the last epoch's report evaluated and what is saved."""
    import keras
    import mydatasets
    import myrun
    d, _ = phase3_whole
    log = (d / 'm-log.csv').read_text().splitlines()
    header, last = log[0].split(','), log[-1].split(',')
    train = mydatasets.dataset('mnist', 96, 32).train
    acc = myrun.Evaluator([('train', train)])(keras.models.load_model(d / 'm.keras'))['train']
    assert acc == pytest.approx(float(last[header.index('acc_train')]), abs=1e-9)


def test_reproduce_killed_at_random_moments(seed1_chain):
    """reproduce.py (smoke recipe, seed 1) killed twice at random moments, then the same
    command again (the conftest fixture): every phase once, every file whole."""
    d = seed1_chain['dir']
    assert seed1_chain['rc'] == 0, seed1_chain['stderr'][-3000:]
    assert '| Proposal (U-Net mask) |' in (d / 'table.md').read_text()
    assert '| Attention-guided CNN |' in (d / 'table.md').read_text()
    import mymodels   # (its load knows the attention model's crop layer)
    for f in ('phase1', 'phase2', 'phase3-heuristic', 'phase3-unet', 'attention'):
        mymodels.load(str(d / f'{f}.keras'))
        rows = (d / f'{f}-log.csv').read_text().splitlines()[1:]
        assert [r.split(',')[0] for r in rows] == ['1']
    assert not leftovers(d)


def wait_for(path, proc, limit=300):
    t0 = time.time()
    while not path.exists() and proc.poll() is None and time.time() - t0 < limit:
        time.sleep(0.1)
    assert path.exists(), proc.communicate()[1][-2000:] if proc.poll() is not None else 'timeout'


def test_ctrl_c_stops_cleanly_then_resumes(tmp_path, phase1_model):
    """Ctrl-C after the first epoch's checkpoint: exit 130, one line saying what to type, no model
    under its name; the same command with --resume then ends with every epoch logged once. (Phase
    3: the handling is the phases' shared code, myrun and mycli.run_main.)"""
    cmd = command('phase3', tmp_path, phase1_model)
    cmd[cmd.index('--subset') + 1] = '800'
    cmd[cmd.index('--batchsize') + 1] = '8'
    p = interruptible(cmd)
    wait_for(tmp_path / 'm-checkpoint' / 'epoch-0001', p)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'Traceback' not in err
    assert err.strip().splitlines()[-1].startswith('interrupted; run the same command with --resume')
    assert (tmp_path / 'm-checkpoint' / 'epoch-0001' / 'state.weights.h5').exists()
    assert not (tmp_path / 'm.keras').exists()
    rc, _, err = run(cmd + ['--resume'])
    assert rc == 0 and 'resuming after epoch' in err, err[-3000:]
    check_finished(tmp_path)


def test_output_folder_turns_read_only(tmp_path, phase1_model):
    if not shutil.which('setpriv'):
        pytest.skip('setpriv (util-linux) is needed to make permissions bind root')
    d = tmp_path / 'out'
    d.mkdir()
    cmd = command('phase1', d, phase1_model)
    cmd[cmd.index('--subset') + 1] = '2000'
    cmd[cmd.index('--batchsize') + 1] = '8'
    # root ignores permission bits; without CAP_DAC_OVERRIDE they bind, as for any user
    p = subprocess.Popen(['setpriv', '--bounding-set=-dac_override,-dac_read_search'] + cmd, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(d / 'm-checkpoint' / 'epoch-0001', p)
    for x in (d, d / 'm-checkpoint'):
        os.chmod(x, 0o555)
    try:
        _, err = p.communicate(timeout=300)
        r = subprocess.CompletedProcess(p.args, p.returncode, '', err)
        line = one_line_error(r)
        assert 'Permission denied' in line
        assert (d / 'm-checkpoint' / 'epoch-0001' / 'state.weights.h5').exists()   # the last good one
        assert not (d / 'm.keras').exists()
    finally:
        for x in (d, d / 'm-checkpoint'):
            os.chmod(x, 0o755)
    rc, _, err = run(cmd + ['--resume'])
    assert rc == 0, err[-3000:]
    assert 'resuming after epoch 1' in err
    check_finished(d)


def test_corrupt_checkpoint(tmp_path, phase1_model):
    """The newest checkpoint damaged: the run resumes from the one before it (a note names the
    damaged file) and ends as an uninterrupted run; both damaged: one error line naming the file,
    and starting over works."""
    cmd = command('phase1', tmp_path, phase1_model)
    rc, _, _ = run(cmd, fault='checkpoint-renamed@2')
    assert rc == -signal.SIGKILL
    saved = tmp_path.parent / 'saved-checkpoint'
    shutil.copytree(tmp_path / 'm-checkpoint', saved)
    state = tmp_path / 'm-checkpoint' / 'epoch-0002' / 'state.weights.h5'
    state.write_bytes(state.read_bytes()[:500])
    rc, _, err = run(cmd + ['--resume'])
    assert rc == 0, err[-3000:]
    assert f'note: checkpoint file {state} cannot be read' in err and 'resuming after epoch 1' in err
    check_finished(tmp_path)
    shutil.copytree(saved, tmp_path / 'm-checkpoint')   # (the finished run removed its own)
    for e in (1, 2):
        meta = tmp_path / 'm-checkpoint' / f'epoch-{e:04d}' / 'meta.json'
        meta.write_text(meta.read_text()[:10])
    rc, _, err = run(cmd + ['--resume'])
    line = one_line_error(subprocess.CompletedProcess(cmd, rc, '', err))
    assert str(tmp_path / 'm-checkpoint' / 'epoch-0001' / 'meta.json') in line
    assert 'run without --resume to start over' in line
    rc, _, err = run(cmd)    # starting over works
    assert rc == 0, err[-3000:]
    check_finished(tmp_path)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, phase1_model):
    cmd = command('phase3', tmp_path, phase1_model)
    rc, _, err = run(cmd, fault='nan@2')
    line = one_line_error(subprocess.CompletedProcess(cmd, rc, '', err))
    assert 'nan' in line.lower() and 'epoch 2' in line and 'epoch 1 is kept' in line
    assert (tmp_path / 'm-checkpoint' / 'epoch-0001' / 'state.weights.h5').exists()
    assert not (tmp_path / 'm-checkpoint' / 'epoch-0002').exists()
    assert not (tmp_path / 'm.keras').exists()
    assert [r.split(',')[0] for r in (tmp_path / 'm-log.csv').read_text().splitlines()[1:]] == ['1']
    rc, _, err = run(cmd + ['--resume'])    # the fault is gone: resuming finishes the run
    assert rc == 0, err[-3000:]
    check_finished(tmp_path)
