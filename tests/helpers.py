"""Running the project's scripts as a user would, from the repository root."""
import os
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name, *args, timeout=600, **kw):
    """Run `python NAME ARGS...`; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, os.path.join(ROOT, name), *map(str, args)], cwd=kw.pop('cwd', ROOT),
                          capture_output=True, text=True, timeout=timeout, env=kw.pop('env', None), **kw)


def one_line_error(r):
    """The failure contract: non-zero exit, no traceback, exactly one line on stderr."""
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    assert len(lines) == 1, r.stderr
    return lines[0]


def csv_numbers(line):
    return [float(v) for v in line.split(',')[1:]]


def interruptible(cmd, **kw):
    """Start `cmd` as a process that Ctrl-C (SIGINT) reaches: a shell starts background jobs
    with SIGINT ignored, and a child would inherit that (then Python never raises
    KeyboardInterrupt), so the child's SIGINT is put back to the default first."""
    return subprocess.Popen(cmd, cwd=kw.pop('cwd', ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def reuse_chain(src, dst, old, drop=(), replace=()):
    """Copy a finished reproduce.py folder SRC (whose records name its models OLD/NAME.keras) to
    DST, its records rewritten to name them where they now are, so that reproduce.py --output DST
    skips those phases instead of training them again. DROP: phases (model names, e.g.
    'attention') whose model and record are removed, so that they are trained again."""
    import json
    import shutil
    shutil.copytree(src, dst)
    text = (dst / 'done.json').read_text().replace(old, str(dst))
    for a, b in replace:
        text = text.replace(a, b)
    done = json.loads(text)
    for name in drop:
        done.pop(str(dst / f'{name}.keras'))
        for f in dst.glob(f'{name}*'):
            f.unlink()
    (dst / 'done.json').write_text(json.dumps(done))
    return dst


def run(cmd, fault=None, kill_after=None, env=None, **kw):
    """Run CMD with BIAL_FAULT=FAULT, or SIGKILL it (and its children) after KILL_AFTER seconds;
    returns (exit status, stdout, stderr). ENV: the environment (default this process's)."""
    env = dict(os.environ if env is None else env)
    env.pop('BIAL_FAULT', None)
    if fault:
        env['BIAL_FAULT'] = fault
    p = subprocess.Popen(cmd, cwd=kw.pop('cwd', ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True, **kw)
    RUNNING.add(p)
    if STOPPED:   # the session is ending (conftest): nothing new runs to its end
        os.killpg(p.pid, signal.SIGKILL)
    try:
        out, err = p.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    finally:
        RUNNING.discard(p)
    return p.returncode, out, err


RUNNING = set()   # run()'s processes still running: conftest stops them if the session ends first
STOPPED = False   # set by conftest at the session's end


def inprocess(name, *args, env=None):
    """Run script NAME's main() in this process, as `python NAME ARGS...` would, and return the
    same CompletedProcess (exit status, stdout, stderr). For runs that end quickly (bad input,
    evaluation): they skip a TensorFlow start-up (about 3 s each). An exception that the script
    does not turn into its one-line error propagates, so the test fails on it."""
    import contextlib
    import io
    import runpy
    from unittest import mock
    out, err, saved = io.StringIO(), io.StringIO(), (sys.argv, dict(os.environ))
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    sys.argv, code = [name, *map(str, args)], 0
    try:   # fd 2 is pytest's to capture: the script's redirect of TensorFlow's native log is skipped
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                mock.patch('mycli.mute_native_stderr'):
            runpy.run_path(os.path.join(ROOT, name), run_name='__main__')
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved[0]
        os.environ.clear()
        os.environ.update(saved[1])
    return subprocess.CompletedProcess([name, *map(str, args)], code, out.getvalue(), err.getvalue())
