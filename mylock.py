"""One run per output: a lock that names the run owning a model file or a run folder.

    mylock.hold('runs/mnist-fast/phase1.keras')   # a second run on it stops here, naming this one

The lock is the file OUTPUT-STEM.lock (for a folder, FOLDER/run.lock) held with the operating
system's advisory lock (flock): of two runs started at once exactly one gets it, and a run that
dies any way at all (kill -9, a power cut, an out-of-memory kill) lets go of it, so the same
command resumes after any kill. The file says who holds it (process, machine, start time,
command): the second run's one-line error names them, and a file left by a run that did not end
normally (its flock gone) is taken over with a note. Under --strategy multiworker only the chief
holds the lock: the workers of one run share its output by design.
"""
import fcntl
import json
import os
import socket
import sys
import time

import mycli


def lock_path(output):
    """Where the lock of a model file (or a run folder) lives."""
    if os.path.isdir(output) or output.endswith(os.sep):
        return os.path.join(output, 'run.lock')
    return os.path.splitext(output)[0] + '.lock'


def hold(output, strategy='default'):
    """Take the lock of `output` until the script's main() ends (mycli.run_main), or stop with a
    one-line UserError naming the run that holds it. Released, its file removed, however main()
    ends; a process killed outright lets go of it too (its file stays, for the next to take)."""
    if strategy == 'multiworker' and not mycli.is_cluster_chief():
        return None
    path = lock_path(output)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read(fd)
            os.close(fd)
            raise mycli.UserError(f'{output} is in use by another run ({_describe(owner)}; lock {path}); '
                                  'wait for it to end, or stop it')
        try:   # the file may have been removed by its owner's exit between open and flock: then again
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    previous = _read(fd)
    if previous:
        print(f'note: {output}: the run that held it did not end normally ({_describe(previous)}); '
              'taking it over', file=sys.stderr)
    me = {'pid': os.getpid(), 'host': socket.gethostname(), 'started': time.strftime('%Y-%m-%d %H:%M:%S'),
          'command': ' '.join([os.path.basename(sys.argv[0])] + sys.argv[1:])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    mycli.at_end(lambda: _release(fd, path))
    return path


def _release(fd, path):
    """A normal end (also an error or Ctrl-C): the file removed, then the flock let go."""
    try:
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            os.remove(path)
    except OSError:
        pass
    os.close(fd)


def _read(fd):
    """The owner the lock file names ({} when empty or unreadable: an owner still starting)."""
    try:
        text = os.pread(fd, 4096, 0).decode()
        owner = json.loads(text) if text.strip() else {}
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(owner):
    if not owner:
        return 'a run that is starting'
    return (f'process {owner.get("pid", "?")} on {owner.get("host", "?")}, started {owner.get("started", "?")}'
            + (f': {owner["command"]}' if owner.get('command') else ''))
