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
