"""Running the project's scripts as a user would, from the repository root."""
import os
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
