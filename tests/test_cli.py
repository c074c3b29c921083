"""The command line of every script: --help starts with a one-line description, every numeric
option is checked by its type (one line, exit 2, nothing written), default output folders are
made while folders the user names must exist. Unit tier: no script here gets past its arguments."""
import argparse
import math
import os
import re
import subprocess
import sys

import pytest

import mycli
from helpers import ROOT, one_line_error, script

SCRIPTS = ['train1.py', 'train2.py', 'train3.py', 'train_att.py', 'evaluate.py', 'evaluate_seg.py', 'reproduce.py', 'benchmark.py',
           'mydatasets.py', 'mybackgrounds.py']


def first_line_of_doc(name):
    import ast
    with open(os.path.join(ROOT, name)) as f:
        return ast.get_docstring(ast.parse(f.read())).split('\n')[0]


@pytest.mark.parametrize('name', SCRIPTS)
def test_help_starts_with_a_one_line_description(name):
    r = script(name, '--help', timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == first_line_of_doc(name)
    assert len(lines[0]) > 30 and lines[0].endswith('.') and lines[1] == '' and lines[2].startswith('usage: ')
    assert '--seed' in r.stdout or name in ('evaluate.py', 'evaluate_seg.py', 'mybackgrounds.py', 'mydatasets.py',
                                             'benchmark.py')


P1 = ['train1.py', 'mnist']
P2 = ['train2.py', 'mnist', 'p1.keras', 'otsu']
P3 = ['train3.py', 'mnist', 'p1.keras', 'heuristic', 'otsu', 'adv']
BAD = [  # (arguments, what the one line must say)
    (P1 + ['--lr', '-1'], 'must be > 0, got -1'),
    (P1 + ['--lr', 'nan'], 'finite'),
    (P1 + ['--lr', '0'], 'must be > 0'),
    (P1 + ['--lr', 'fast'], 'not a number'),
    (P1 + ['--epochs', '0'], 'at least 1'),
    (P1 + ['--epochs', '2.5'], 'not a whole number'),
    (P1 + ['--batchsize', '-8'], 'at least 1'),
    (P1 + ['--eval-batchsize', '0'], 'at least 1'),
    (P1 + ['--subset', '0'], 'at least 1'),
    (P1 + ['--test-subset', '-1'], 'at least 1'),
    (P1 + ['--seed', '-1'], 'at least 0'),
    (P1 + ['--seed', str(2 ** 32)], 'below 2\\*\\*32'),
    (P1 + ['--lr-schedule', 'linear'], 'invalid choice'),
    (P1 + ['--precision', 'float16'], 'invalid choice'),
    (['evaluate.py', 'mnist', 'm.keras', '--precision', 'half'], 'invalid choice'),
    (['reproduce.py', 'mnist', '--precision', 'bf16'], 'invalid choice'),
    (P1 + ['mnsit'], 'unrecognized|valid names'),
    (['train1.py', 'mnsit'], 'valid names: .*mnist_backgrounds'),
    (['train1.py', 'biased_mnist_1.5'], 'Biased-MNIST is biased_mnist_RHO.*in \\(0, 1\\]'),
    (['evaluate.py', 'biased_mnist_0', 'm.keras'], 'Biased-MNIST is biased_mnist_RHO'),
    (['train1.py', 'biased_mnist_high'], 'Biased-MNIST is biased_mnist_RHO'),
    (P2 + ['--area', '1.5'], 'between 0 and 1'),
    (P2 + ['--area', '0'], 'between 0 and 1'),
    (P2 + ['--total-variation', '-0.1'], 'must be >= 0'),
    (P2 + ['--lr', '0'], 'must be > 0'),
    (P2 + ['--lr-schedule', 'step'], 'invalid choice'),
    (P2 + ['--total-variation', 'inf'], 'finite'),
    (P3 + ['--gen-lr=-1e-4'], 'must be > 0'),
    (P3 + ['--lr', 'inf'], 'finite'),
    (P3 + ['--tiles', '0'], 'at least 1'),
    (P3 + ['--clean-share', '1.5'], 'between 0 and 1'),
    (P3 + ['--clean-share', '-0.1'], 'between 0 and 1'),
    (P3 + ['--average', '-1'], 'at least 0'),
    (P3 + ['--replay', '2'], 'between 0 and 1'),
    (P3 + ['--history', '0'], 'at least 1'),
    (P3 + ['--generators', '0'], 'at least 1'),
    (P3 + ['--gen-span', '0'], 'between 0 and 1'),
    (P3 + ['--gen-span', '1.5'], 'between 0 and 1'),
    (P3 + ['--back-flip', '1.5'], 'between 0 and 1'),
    (P3 + ['--dim', 'rgb'], 'invalid choice'),
    (['train1.py', 'mnist', '--warp', '1.5'], 'between 0 and 1'),
    (['train_att.py', 'mnist', '--tau', '0'], 'between 0 and 1'),
    (['train_att.py', 'mnist', '--tau', '1.5'], 'between 0 and 1'),
    (['train_att.py', 'mnist', '--crop', '0'], 'at least 1'),
    (P3 + ['--area', '1'], 'between 0 and 1'),
    (['train3.py', 'mnist', 'p1.keras', 'heuristic', 'otsu', 'sky'], 'invalid choice'),
    (['evaluate.py', 'mnist', 'm.keras', '--batchsize', '0'], 'at least 1'),
    (['evaluate_seg.py', 'mnist', 'm.keras', '--batchsize', '0'], 'at least 1'),
    (['reproduce.py', 'mnist', '--seeds', '0'], 'at least 1'),
    (['reproduce.py', 'mnist', '--jobs', '0'], 'at least 1'),
    (['reproduce.py', 'mnist', '--seed', '-3'], 'at least 0'),
    (['reproduce.py', 'cifar10'], 'invalid choice'),
    (['reproduce.py', 'biased_mnist', '--rho', '0.99,1.5'], 'rho must be in \\(0, 1\\], got 1.5'),
    (['mydatasets.py', 'mnist', '--n', '-2'], 'at least 1'),
    (['mybackgrounds.py', '--scale', '0'], 'at least 1'),
]


@pytest.mark.parametrize('args, says', BAD, ids=[' '.join(a[:1] + a[-2:]) for a, _ in BAD])
def test_bad_arguments_one_line(args, says, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, args[0])] + args[1:] + ['--output', str(tmp_path / 'o.keras')]
                       if args[0].startswith('train') else [sys.executable, os.path.join(ROOT, args[0])] + args[1:],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    line = one_line_error(r)
    assert r.returncode == 2, r.stderr
    assert re.search(says, line), line
    assert os.listdir(tmp_path) == []   # nothing written


def test_output_checks(tmp_path):
    for args, says in [(['train1.py', 'mnist', '--output', str(tmp_path / 'nope' / 'm.keras')], 'does not exist'),
                       (['train1.py', 'mnist', '--output', str(tmp_path / 'm.txt')], r'\.keras or \.h5'),
                       (['evaluate_seg.py', 'mnist', 'u.keras', '--output', str(tmp_path / 'x' / 'y')], 'does not exist'),
                       (['mybackgrounds.py', '--size', '8', '--output', str(tmp_path / 'b.png')], 'at least 16'),
                       (P3[:-1] + ['black', '--replay', '0.5', '--output', str(tmp_path / 'm.keras')], 'needs back=adv'),
                       (P3[:-1] + ['noise', '--generators', '3', '--output', str(tmp_path / 'm.keras')], 'needs back=adv'),
                       (P3[:-1] + ['black', '--back-flip', '0.5', '--output', str(tmp_path / 'm.keras')], 'needs back=adv'),
                       (P3[:-1] + ['noise', '--dim', 'all', '--output', str(tmp_path / 'm.keras')], '--dim .*needs back=adv'),
                       (P3[:-1] + ['noise', '--gen-span', '0.5', '--lr-schedule', 'cosine', '--output',
                                   str(tmp_path / 'm.keras')], 'needs back=adv'),
                       (P3 + ['--gen-span', '0.5', '--output', str(tmp_path / 'm.keras')], 'needs --lr-schedule cosine'),
                       (P3 + ['--replay', '0.6', '--clean-share', '0.5', '--output', str(tmp_path / 'm.keras')],
                        'together at most 1')]:
        r = script(*args, cwd=tmp_path)
        assert re.search(says, one_line_error(r))
    assert os.listdir(tmp_path) == []


def test_argument_types():
    assert mycli.rate('3e-4') == 3e-4
    for bad in ['-1', '0', 'nan', 'inf', '-inf', 'x']:
        with pytest.raises(argparse.ArgumentTypeError):
            mycli.rate(bad)
    assert mycli.weight('0') == 0 and mycli.share('0') == 0 and mycli.share('1') == 1
    assert mycli.threshold('1') == 1 and mycli.fraction('0.5') == 0.5
    for f, bad in [(mycli.threshold, '0'), (mycli.fraction, '1'), (mycli.fraction, '0'), (mycli.share, '1.01'),
                   (mycli.weight, '-1e-9'), (mycli.positive_int, '0'), (mycli.non_negative_int, '-1'),
                   (mycli.seed, str(2 ** 32)), (mycli.positive_int, '1.0')]:
        with pytest.raises(argparse.ArgumentTypeError):
            f(bad)
    assert not math.isnan(mycli.weight('1e-3'))


def test_default_outputs_are_made_named_ones_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert mycli.output_file(None, os.path.join('runs', 'a', 'm.keras')) == os.path.join('runs', 'a', 'm.keras')
    assert (tmp_path / 'runs' / 'a').is_dir()
    with pytest.raises(mycli.UserError, match='does not exist'):
        mycli.output_file(os.path.join('other', 'm.keras'), 'x.keras')
    assert mycli.output_dir(None, os.path.join('deep', 'er', 'seg')) and (tmp_path / 'deep' / 'er').is_dir()
    assert mycli.output_dir('pics') == 'pics'   # a named folder whose parent exists: made by the caller
    with pytest.raises(mycli.UserError, match='does not exist'):
        mycli.output_dir(os.path.join('no', 'such', 'pics'))


def test_progress_reports_finished_steps():
    """What reproduce.py's bars read: the steps finished in the run, after each graph call."""
    import keras
    import numpy as np
    import myrun
    r, w = os.pipe()
    x = keras.Input((3,))
    model = keras.Model(x, keras.layers.Dense(2)(x))
    model.compile('sgd', 'mse', steps_per_execution=2)
    data = np.zeros((8, 3), np.float32), np.zeros((8, 2), np.float32)
    model.fit(*data, batch_size=2, epochs=2, verbose=0, callbacks=[myrun.Progress(w)])
    os.close(w)
    with os.fdopen(r) as f:
        assert [int(line) for line in f] == [2, 4, 6, 8]


def test_precision_note_where_bfloat16_is_emulated(monkeypatch, tmp_path, capsys):
    """bfloat16 hardware is read from /proc/cpuinfo's flags (or an NVIDIA GPU); without it,
    --precision bfloat16 still runs but says that float32 is likely faster."""
    import builtins
    real_open = builtins.open
    for flags, native in [('fpu sse avx2 avx512f', False), ('fpu avx512f avx512_bf16', True), ('fpu amx_bf16 amx_tile', True)]:
        (tmp_path / 'cpuinfo').write_text(f'processor\t: 0\nflags\t\t: {flags}\n')
        monkeypatch.setattr(builtins, 'open', lambda f, *a, **k: real_open(tmp_path / 'cpuinfo' if f == '/proc/cpuinfo' else f, *a, **k))
        monkeypatch.setattr(os.path, 'isdir', lambda d: False)   # no GPU
        assert mycli.bfloat16_hardware() is native
        assert mycli.precision('bfloat16') == 'bfloat16' and mycli.precision('float32') == 'float32'
        assert ('likely faster' in capsys.readouterr().err) is not native
        monkeypatch.undo()
    with pytest.raises(argparse.ArgumentTypeError, match='invalid choice'):
        mycli.precision('float16')


def test_reproduce_passes_its_precision_to_every_phase():
    """reproduce.py --precision bfloat16 reaches every phase (the attention baseline too); in
    float32 no phase gets the option, so the phases' records of earlier runs stay valid."""
    import reproduce
    for precision in ('bfloat16', 'float32'):
        phases = reproduce.plan('mnist_backgrounds', 'out', 'fast', 0, precision)
        assert len(phases) == 5
        for p in phases:
            assert p.args.count('--precision') == (precision == 'bfloat16'), p.name
            assert p.settings.precision == precision
            if precision == 'bfloat16':
                assert p.args[p.args.index('--precision') + 1] == 'bfloat16'
    assert set(reproduce.PRECISION) == set(reproduce.RECIPES)


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_amx_and_no_gpu(monkeypatch):
    """The fast recipe's precision, 'auto', is bfloat16 only where it was screened and tested (a
    CPU with AMX, no GPU); float32 on AVX512-BF16 without AMX, on AVX2, and wherever a GPU is."""
    import reproduce
    assert reproduce.PRECISION['fast'] == 'auto'
    for flags, gpu, expected in [({'avx2', 'amx_bf16', 'amx_tile'}, False, 'bfloat16'),
                                 ({'avx2', 'amx_bf16'}, True, 'float32'),
                                 ({'avx2', 'avx512_bf16'}, False, 'float32'),
                                 ({'avx2', 'fma'}, False, 'float32'), (set(), False, 'float32')]:
        monkeypatch.setattr(mycli, 'cpu_flags', lambda: flags)
        monkeypatch.setattr(mycli, 'nvidia_gpu', lambda: gpu)
        assert mycli.recipe_precision('auto') == expected, (flags, gpu)
        assert mycli.recipe_precision('float32') == 'float32' and mycli.recipe_precision('bfloat16') == 'bfloat16'
    assert all(v in ('auto', *mycli.PRECISIONS) for v in reproduce.PRECISION.values())


@pytest.mark.parametrize('recipe', ['paper', 'fast', 'smoke', 'biased'])
def test_each_phase_runs_with_the_settings_reproduce_records(recipe, tmp_path):
    """The command line reproduce.py gives each phase, parsed by that script's own parser, gives
    the very settings that reproduce.py records in done.json (so a phase is skipped exactly when it
    would train the same model); both Proposal rows train phase 3 alike but for their masks and
    what the recipe gives the U-Net row of its own ('phase3-unet')."""
    import importlib
    import reproduce
    phases = reproduce.plan('mnist_backgrounds', str(tmp_path), recipe, 3)
    r = reproduce.RECIPES[recipe]
    own = {k for k, v in r.get('phase3-unet', {}).items() if r['phase3'].get(k) != v}
    for p in phases:
        script_ = importlib.import_module(p.script[:-3])
        ns = script_.parser().parse_args([str(a) for a in p.args] + ['--output', p.key])
        parsed = script_.Settings.from_args(ns)
        assert parsed.record() == p.settings.record(), p.name
        assert parsed.seed == 3 and reproduce.steps_of(parsed, 60000) == reproduce.steps_of(p.settings, 60000)
    h, u = (p.settings.record() for p in phases if p.script == 'train3.py')
    assert {k for k in set(h) | set(u) if h.get(k) != u.get(k)} == {'unet_model'} | own


class FakePhases:
    """Stands in for reproduce.run_phase: each phase writes its model file at once and returns its
    CSV line, or fails (the scheduler's timing is tested in test_schedule.py, with events)."""

    def __init__(self, fail=None):
        self.fail, self.started, self.reports = fail, [], set()

    def __call__(self, script_, args, model, bar, strategy='default', procs=None, report='none'):
        self.started.append(os.path.basename(model))
        self.reports.add(report)
        if os.path.basename(model) == self.fail:
            raise mycli.UserError(f'{script_} failed: out of memory')
        open(model, 'w').close()
        return f'{script_},0.9\n'


NAMES = ['phase1.keras', 'phase3-heuristic.keras', 'phase2.keras', 'phase3-unet.keras', 'attention.keras']


def test_reproduce_records_each_phase_and_skips_it_then(monkeypatch, tmp_path, capsys):
    """Every finished phase is recorded in done.json with its settings' record; the same command
    then runs nothing, and neither does a folder whose records are the command lines of a run made
    before records were settings; a changed setting runs that phase again. With no terminal (no
    bars) each phase's start is a line."""
    import json
    import reproduce
    fake = FakePhases()
    monkeypatch.setattr(reproduce, 'run_phase', fake)
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    assert sorted(fake.started) == sorted(NAMES)
    assert fake.reports == {'none'}   # the phases evaluate nothing: the table evaluates their models
    done = json.loads((tmp_path / 'done.json').read_text())
    phases = reproduce.plan('mnist_backgrounds', str(tmp_path), 'fast', 0)
    assert all(done[p.key] == p.settings.record() for p in phases)
    assert capsys.readouterr().out.count(': started') == len(NAMES)
    again = FakePhases()
    monkeypatch.setattr(reproduce, 'run_phase', again)
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    assert again.started == []
    legacy = {p.key: ' '.join(map(str, [p.script] + p.args)) for p in phases}
    (tmp_path / 'done.json').write_text(json.dumps(legacy))
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    assert again.started == []
    monkeypatch.setitem(reproduce.RECIPES['fast'], 'phase2', dict(reproduce.RECIPES['fast']['phase2'], area=0.2))
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    assert sorted(again.started) == ['phase2.keras', 'phase3-unet.keras']   # (the U-Net row reads phase 2)


class TimedPhases(FakePhases):
    """Fake phases that take `seconds` each and keep when each ran (folder/model: (start, end))."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.times = seconds, {}

    def __call__(self, script_, args, model, bar, *a, **k):
        import time
        t0 = time.time()
        time.sleep(self.seconds)
        out = super().__call__(script_, args, model, bar, *a, **k)
        self.times[os.path.relpath(model, os.path.dirname(os.path.dirname(model)))] = (t0, time.time())
        return out


def test_chains_share_one_schedule(monkeypatch, tmp_path):
    """Several seeds' chains in one schedule: with two slots the second chain's phase 1 starts
    beside the first chain's phases (not after its last), each folder records its own phases, and
    the chains' wall times add up to the time the training took; with one slot, chain after chain."""
    import json
    import time
    import reproduce
    chains = [reproduce.Chain('mnist_backgrounds', str(tmp_path / f'seed-{s}'), s, 60000, f'seed {s}: ') for s in (0, 1)]
    fake = TimedPhases(0.2)
    monkeypatch.setattr(reproduce, 'run_phase', fake)
    t0 = time.time()
    walls = reproduce.train_chains(chains, 'fast', 'default', True, jobs=2)
    took = time.time() - t0
    assert fake.times['seed-1/phase1.keras'][0] < fake.times['seed-0/phase3-heuristic.keras'][0]
    for c in chains:
        done = json.loads((tmp_path / os.path.basename(c.out) / 'done.json').read_text())
        phases = reproduce.plan(c.data, c.out, 'fast', c.seed)
        assert all(done[p.key] == p.settings.record() for p in phases) and done['_wall'] == walls[c.out]
    # 10 phases of 0.2 s, two at a time: about 1 s, shared between the chains
    assert 0.9 < took < 2.0 and took - 0.3 < sum(walls.values()) <= took and min(walls.values()) > 0.3
    one = TimedPhases(0.0)
    monkeypatch.setattr(reproduce, 'run_phase', one)
    chains = [c._replace(out=c.out + '-one') for c in chains]
    reproduce.train_chains(chains, 'fast', 'default', True, jobs=1)
    assert one.started == NAMES + NAMES   # seed 0's, in the plan's order, then seed 1's


@pytest.mark.parametrize('wrapped', [False, True])
def test_sigterm_stops_a_script_as_ctrl_c_does(wrapped):
    """SIGTERM (kill; reproduce.py stopping its phases) ends a script in one line and exit 143, also
    when a training run turns it into its note on how to continue (myrun's fit)."""
    body = 'os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)'
    if wrapped:
        body = (f'def f():\n    try:\n        {body}\n    except KeyboardInterrupt:\n'
                f'        raise mycli.Interrupted("run the same command with --resume")\n')
    else:
        body = f'def f():\n    {body}\n'
    code = f'import mycli, os, signal, time\n{body}mycli.run_main(f)\n'
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 143, r.stderr
    assert r.stderr.strip() == ('terminated; run the same command with --resume' if wrapped else 'terminated')


def test_output_reaches_a_pipe_line_by_line():
    """Printed lines reach a file or a pipe as they are printed (a long run under nohup is
    followed in its log), not when the script ends."""
    code = 'import sys, mycli; mycli.run_main(lambda: print(sys.stdout.line_buffering))'
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == 'True', r.stderr


def test_reproduce_stops_when_a_phase_fails(monkeypatch, tmp_path):
    """A failing phase is the error reported, only the phases finished before it are recorded, and
    the same command then runs what is left."""
    import json
    import reproduce
    fake = FakePhases(fail='phase3-heuristic.keras')
    monkeypatch.setattr(reproduce, 'run_phase', fake)
    with pytest.raises(mycli.UserError, match='train3.py failed: out of memory'):
        reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=1)
    assert fake.started == ['phase1.keras', 'phase3-heuristic.keras']
    assert [os.path.basename(k) for k in json.loads((tmp_path / 'done.json').read_text()) if k != '_wall'] == \
        ['phase1.keras']
    again = FakePhases()
    monkeypatch.setattr(reproduce, 'run_phase', again)
    reproduce.train('mnist_backgrounds', str(tmp_path), 'fast', 0, 60000, 'default', True, jobs=2)
    assert sorted(again.started) == sorted(set(NAMES) - {'phase1.keras'})


def test_reproduce_validation_reports_every_epoch(monkeypatch, tmp_path):
    """Validation runs keep the per-epoch accuracies (recipes are studied on them); test-set runs
    (above) do not evaluate the epochs between."""
    import reproduce
    fake = FakePhases()
    monkeypatch.setattr(reproduce, 'run_phase', fake)
    reproduce.train('mnist_validation', str(tmp_path), 'fast', 0, 55000, 'default', True, jobs=1)
    assert sorted(fake.started) == sorted(NAMES) and fake.reports == {'epoch'}


def test_reproduce_passes_its_threads_to_every_phase(tmp_path):
    """reproduce.py --threads reaches every phase, and its script parses it back to the settings
    reproduce records (threads are part of the record: the sums' order depends on them); at 0
    (TensorFlow's own choice, the default) no phase gets the option, so earlier records stay valid."""
    import importlib
    import mysettings
    import reproduce
    for threads in (1, 0):
        for p in reproduce.plan('biased_mnist_0.99', str(tmp_path), 'biased', 0, 'float32', threads):
            assert p.args.count('--threads') == (threads > 0), p.name
            assert p.settings.threads == threads and p.settings.record().get('threads', 0) == threads
            script_ = importlib.import_module(p.script[:-3])
            parsed = script_.Settings.from_args(script_.parser().parse_args([str(a) for a in p.args] + ['--output', p.key]))
            assert parsed.record() == p.settings.record(), p.name
    assert reproduce.recipe_options('biased', 'float32', 2)['phase1'][-2:] == ['--threads', 2]
    phase1 = lambda **kw: mysettings.Phase1(dataset='mnist', **kw)
    assert 'threads' not in phase1().record() and phase1(threads=2).record()['threads'] == 2


def test_threads_reach_tensorflow():
    """--threads N sets TensorFlow's threads within and between operations before its first one."""
    code = ('import mycli; mycli.start_tensorflow(1); import tensorflow as tf; '
            'print(tf.config.threading.get_intra_op_parallelism_threads(), '
            'tf.config.threading.get_inter_op_parallelism_threads())')
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['1', '1']
