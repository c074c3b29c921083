"""One run per output (mylock) and records that survive damage (done.json, evaluation.json, a
checkpoint's meta.json and state): unit tier, in-process, plus plain-Python subprocesses that
hold a lock (no TensorFlow in them)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mylock
from helpers import ROOT, one_line_error, script

DAMAGE = {'cut short': lambda raw: raw[:len(raw) // 2], 'garbage': lambda raw: b'\x00\xff garbage \x17' * 5,
          'empty': lambda raw: b''}

HOLDER = textwrap.dedent('''
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    import mylock
    mylock.hold({output!r})
    print('held', flush=True)
    if sys.argv[1] == 'kill':
        os.kill(os.getpid(), signal.SIGKILL)   # as kill -9 or a power cut: no clean-up runs
    time.sleep(60)
''')


@pytest.fixture(autouse=True)
def let_go():
    """The locks a test takes in this process are let go at its end, as run_main would."""
    import mycli
    yield
    while mycli._AT_END:
        mycli._AT_END.pop()()


def holder(output, how):
    """A plain Python process that holds the lock of `output`, then is killed (how='kill') or
    keeps it (how='hold')."""
    p = subprocess.Popen([sys.executable, '-c', HOLDER.format(root=ROOT, output=str(output)), how],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    return p


def test_a_second_training_run_on_an_output_stops_at_once(tmp_path):
    """train1.py on a model file that a run holds: one line naming the holder's process, exit
    status 1, nothing written (the holder's lock file is untouched)."""
    out = tmp_path / 'm.keras'
    p = holder(out, 'hold')
    try:
        before = (tmp_path / 'm.lock').read_bytes()
        r = script('train1.py', 'mnist', '--epochs', 1, '--output', out, timeout=60)
        line = one_line_error(r)
        assert r.returncode == 1 and f'process {p.pid} on ' in line and 'in use by another run' in line
        assert sorted(f.name for f in tmp_path.iterdir()) == ['m.lock']
        assert (tmp_path / 'm.lock').read_bytes() == before
    finally:
        p.kill()
        p.wait()


def test_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
    """The lock of a run killed with SIGKILL is recognised (the OS let go of it) and taken over
    with a note naming the killed run; then this process holds it, and a newcomer is refused."""
    out = tmp_path / 'm.keras'
    p = holder(out, 'kill')
    p.wait()
    assert (tmp_path / 'm.lock').exists()   # left behind
    assert mylock.hold(str(out)) == str(tmp_path / 'm.lock')
    err = capsys.readouterr().err
    assert f'process {p.pid} ' in err and 'did not end normally' in err and 'taking it over' in err
    owner = json.loads((tmp_path / 'm.lock').read_text())
    assert owner['pid'] == os.getpid()
    r = subprocess.run([sys.executable, '-c', f'import sys; sys.path.insert(0, {ROOT!r}); import mycli, mylock; '
                        f'mycli.run_main(lambda: mylock.hold({str(out)!r}))'], capture_output=True, text=True)
    assert r.returncode == 1 and f'process {os.getpid()} ' in one_line_error(r)


def test_a_folder_lock_and_multiworker(tmp_path, monkeypatch):
    """A run folder's lock is FOLDER/run.lock; under multiworker only the chief takes it, so the
    workers of one run do not lock each other out."""
    assert mylock.lock_path(str(tmp_path) + os.sep) == str(tmp_path / 'run.lock')
    cluster = {'cluster': {'worker': ['localhost:1', 'localhost:2']}}
    monkeypatch.setenv('TF_CONFIG', json.dumps({**cluster, 'task': {'type': 'worker', 'index': 1}}))
    assert mylock.hold(str(tmp_path / 'w.keras'), 'multiworker') is None and not (tmp_path / 'w.lock').exists()


@pytest.mark.parametrize('damage', DAMAGE)
def test_read_json_names_the_damaged_file(tmp_path, damage):
    import myfiles
    path = tmp_path / 'done.json'
    assert myfiles.read_json(str(path)) is None   # no file: no record
    path.write_bytes(DAMAGE[damage](json.dumps({'a': [1, 2, 3], 'b': 'x' * 40}).encode()))
    with pytest.raises(myfiles.Damaged, match=str(path)):
        myfiles.read_json(str(path))
    path.write_text('[1, 2]')   # JSON, but not the record it should be
    with pytest.raises(myfiles.Damaged, match='not the record'):
        myfiles.read_json(str(path), lambda d: isinstance(d, dict))


@pytest.mark.parametrize('damage', DAMAGE)
def test_a_damaged_done_json_takes_no_phase_as_done(monkeypatch, tmp_path, capsys, damage):
    """reproduce.py on a folder whose done.json is damaged: a one-line note naming it, every phase
    run again (none taken as done on a record that cannot be read), then a whole record."""
    import reproduce
    from test_cli import NAMES, FakePhases
    monkeypatch.setattr(reproduce, 'run_phase', FakePhases())
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    done = tmp_path / 'done.json'
    done.write_bytes(DAMAGE[damage](done.read_bytes()))
    capsys.readouterr()
    again = FakePhases()
    monkeypatch.setattr(reproduce, 'run_phase', again)
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    err = [l for l in capsys.readouterr().err.splitlines() if 'note:' in l]
    assert len(err) == 1 and str(done) in err[0] and 'run again' in err[0]
    assert sorted(again.started) == sorted(NAMES)
    assert len(json.loads(done.read_text())) == len(NAMES) + 1   # the phases and the wall time


class FakeEvaluator:
    """Stands in for the 33 test sets: every image right but the first of each set."""

    def __init__(self):
        self.calls = 0

    def hits(self, model):
        self.calls += 1
        return {n: np.arange(10) > 0 for n in NAMES33}


NAMES33 = [f'set{i}' for i in range(33)]


@pytest.mark.parametrize('damage', list(DAMAGE) + ['an entry cut'])
def test_a_damaged_evaluation_json_is_evaluated_again(monkeypatch, tmp_path, capsys, damage):
    """evaluation.json cut short, garbage, empty, or one row's entry cut: what cannot be read is
    evaluated again (a note names the file), the rest is taken from it, and the table's numbers
    are those of a whole evaluation."""
    import myrun
    import reproduce
    ev = FakeEvaluator()
    table = [(n, None) for n in NAMES33[:13]]
    noises = [(n, None) for n in NAMES33[13:]]
    images = type('Data', (), {'tests': [(n, (np.zeros((1, 2, 2, 1)), None)) for n in NAMES33[:7]]})()
    monkeypatch.setattr(reproduce, 'evaluator_of', lambda *a: (table, noises, ev))
    monkeypatch.setattr(reproduce, 'test_data', lambda *a: images)
    monkeypatch.setattr(myrun, 'load_model', lambda *a, **k: None)
    models = {}
    for row in ('A', 'B'):
        models[row] = str(tmp_path / f'{row}.keras')
        open(models[row], 'w').close()
    whole = reproduce.evaluate(str(tmp_path), models, 'mnist', None)
    assert ev.calls == 2
    path = tmp_path / 'evaluation.json'
    if damage == 'an entry cut':
        cache = json.loads(path.read_text())
        del cache['B']['noise'][5:]
        path.write_text(json.dumps(cache))
    else:
        path.write_bytes(DAMAGE[damage](path.read_bytes()))
    capsys.readouterr()
    again = reproduce.evaluate(str(tmp_path), models, 'mnist', None)
    assert ev.calls == (3 if damage == 'an entry cut' else 4)
    assert again[:2] == whole[:2]
    notes = [l for l in capsys.readouterr().err.splitlines() if 'note:' in l]
    assert len(notes) == (0 if damage == 'an entry cut' else 1) and all(str(path) in l for l in notes)


def checkpointed_run(tmp_path, epochs=3):
    """A tiny model checkpointed after each of `epochs` epochs (its weights set to the epoch
    number), and the weights of each epoch."""
    import keras
    import myrun
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    run = myrun.Run(str(tmp_path / 'm.keras'), {'lr': 1})
    saver = myrun.Checkpointer(run.directory, run.log_path, {'lr': 1})
    saver.set_model(model)
    for e in range(epochs):
        model.set_weights([np.full(w.shape, e + 1.0, np.float32) for w in model.get_weights()])
        saver.on_epoch_end(e)
    return model, run


def test_the_checkpoint_before_the_newest_is_kept(tmp_path):
    _, run = checkpointed_run(tmp_path)
    assert sorted(os.listdir(run.directory)) == ['epoch-0002', 'epoch-0003']


@pytest.mark.parametrize('file, damage', [('meta.json', 'cut short'), ('meta.json', 'garbage'),
                                          ('state.weights.h5', 'cut short'), ('state.weights.h5', 'garbage')])
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(tmp_path, capsys, file, damage):
    """The newest checkpoint's meta.json or state damaged: a note naming that file, and the run
    resumes from the one before (its weights, its epoch); both damaged: one error line naming
    the file, and how to start over."""
    import myrun
    from mymodels import ModelError
    model, _ = checkpointed_run(tmp_path)
    newest = tmp_path / 'm-checkpoint' / 'epoch-0003' / file
    newest.write_bytes(DAMAGE[damage](newest.read_bytes()))
    run = myrun.Run(str(tmp_path / 'm.keras'), {'lr': 1}, resume=True)
    model.set_weights([np.zeros(w.shape, np.float32) for w in model.get_weights()])
    assert run.restore(model) == 2
    assert all(np.all(w == 2.0) for w in model.get_weights())
    assert sorted(os.listdir(run.directory)) == ['epoch-0002']   # the damaged one is gone: epoch 3 comes again
    err = capsys.readouterr().err
    assert f'note: ' in err and str(newest) in err and 'resuming from the one before it' in err
    checkpointed_run(tmp_path)   # both again, then both damaged
    for e in (2, 3):
        older = tmp_path / 'm-checkpoint' / f'epoch-{e:04d}' / file
        older.write_bytes(DAMAGE[damage](older.read_bytes()))
    with pytest.raises(ModelError, match='run without --resume to start over') as e:
        myrun.Run(str(tmp_path / 'm.keras'), {'lr': 1}, resume=True).restore(model)
    assert str(older) in str(e.value)
