"""What every script does before TensorFlow starts: its command line and its one-line errors.

    p = mycli.ArgumentParser(__doc__)          # --help: the docstring's first line, then usage
    p.add_argument('--lr', type=mycli.rate)    # each numeric option checked by its type, here
    ...
    mycli.run_main(main)                       # bad input: one line on stderr, exit 1 (or 2)

A script parses and checks its arguments first, so that bad input is answered at once, then
calls start_tensorflow(): TensorFlow is never started as a side effect of an import.
"""
import argparse
import json
import math
import os
import signal
import sys

# the choices of the scripts' arguments, each listed once
STRATEGIES = ['default', 'mirrored', 'multiworker']   # tf.distribute: one device, local GPUs, machines
BINARIZE = ['otsu', '0.5', 'quantile', 'none', 'jitter']   # per-image binarization of a mask (mytrainers.binarize)
BINARIZE_ONCE = ('otsu', '0.5')   # those that cut an augmented binary mask where it was cut (--masks-once)
BACKS = ['black', 'noise', 'adv', 'real']              # phase 3's backgrounds
SCHEDULES = ['constant', 'cosine']                     # learning rates (mymodels.learning_rate)
PRECISIONS = ['float32', 'bfloat16']                   # what the layers compute in (mymodels.in_precision)
SEED = 0   # without --seed every run uses this seed: the same command gives the same numbers
SEED_HELP = ('seed of every random choice: weights, data order, augmentation, noise, crops '
             f'(default {SEED}: the same command gives the same numbers)')


class UserError(Exception):
    """Bad input or a missing resource: the scripts print the message as one line and exit 1."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a training run; the message says how to continue it."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a batch system's time limit, reproduce.py stopping its phases): handled as
    Ctrl-C is, so that a run stops where it can be continued, whatever the shell did with SIGINT
    (a script's background job ignores it)."""


def _terminate(signum, frame):
    raise Terminated()


# ----------------------------------------------------------------------------------------------
# The parser: one-line errors, the docstring as description and examples

class ArgumentParser(argparse.ArgumentParser):
    """argparse, with --help starting with the script's one-line description (the docstring's
    first line), its other lines (examples) after the options, and a bad argument answered
    in one line (`prog: error: ...`) with exit status 2."""

    def __init__(self, doc, epilog=None, **kw):
        first, _, rest = doc.strip().partition('\n')
        epilog = '\n\n'.join(t for t in (rest.strip('\n'), epilog) if t)
        super().__init__(description=first.strip(), epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kw)

    def format_help(self):
        text = super().format_help()
        usage, _, rest = text.partition('\n\n')   # argparse puts the usage first: put it second
        return rest.replace(self.description + '\n\n', self.description + '\n\n' + usage + '\n\n', 1)

    def error(self, message):
        self.exit(2, f'{self.prog}: error: {message}\n')


def checked(check):
    """An argparse type from a function that raises UserError: its message becomes argparse's."""
    def convert(s):
        try:
            return check(s)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e))
    convert.__name__ = check.__name__
    return convert


# ----------------------------------------------------------------------------------------------
# Numeric options, each checked here by its type (argparse prints the message in one line)

def _number(s, kind):
    try:
        v = kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{s!r} is not a {"whole number" if kind is int else "number"}')
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f'must be a finite number, got {s}')
    return v


def _at_least(least):
    def whole(s):
        v = _number(s, int)
        if v < least:
            raise argparse.ArgumentTypeError(f'must be at least {least}, got {v}')
        return v
    return whole


positive_int = _at_least(1)        # epochs, batch sizes, counts, sizes
non_negative_int = _at_least(0)    # --average 0 = off


def seed(s):
    v = non_negative_int(s)
    if v >= 2 ** 32:
        raise argparse.ArgumentTypeError(f'must be below 2**32, got {v}')
    return v


def rate(s):
    """A learning rate: > 0 (a negative one would climb the loss) and finite."""
    v = _number(s, float)
    if v <= 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {v:g}')
    return v


def weight(s):
    """A loss weight: >= 0 and finite."""
    v = _number(s, float)
    if v < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {v:g}')
    return v


def _between(low_open, high_open):
    def between(s):
        v = _number(s, float)
        if v < 0 or v > 1 or (low_open and v == 0) or (high_open and v == 1):
            raise argparse.ArgumentTypeError(f'must be between 0 and 1 ({"excluded" if low_open else "included"} '
                                             f'and {"excluded" if high_open else "included"}), got {v:g}')
        return v
    return between


fraction = _between(True, True)    # an area: strictly between 0 and 1
share = _between(False, False)     # a share of images: 0 and 1 allowed
threshold = _between(True, False)  # a threshold in (0, 1], such as AG-CNN's tau
span = _between(True, False)       # a part of a run, in (0, 1]


def training_args(p, settings):
    """The options every training script shares (added after its own arguments), and every
    option's default from the script's settings class (mysettings): one place for each."""
    p.add_argument('--epochs', type=positive_int)
    p.add_argument('--batchsize', type=positive_int, help='training batch size')
    p.add_argument('--eval-batchsize', type=positive_int, help='evaluation batch size')
    p.add_argument('--report', choices=['epoch', 'end', 'none'],
                   help='evaluate the test sets after every epoch (epoch, the published), after the last one only '
                   '(end: the same model and final line, less time), or never (none: the same model, no final '
                   'line; reproduce.py uses it for test-set runs, and evaluates the saved models itself)')
    p.add_argument('--seed', type=seed, help=SEED_HELP)
    p.add_argument('--resume', action='store_true', help='continue an interrupted run from its last checkpoint')
    p.add_argument('--subset', type=positive_int, help='use only the first N training images')
    p.add_argument('--test-subset', type=positive_int, help='use only the first N images of each test set')
    p.add_argument('--flip', type=share, metavar='P',
                   help='probability of a horizontal flip in the augmentation (default 0.5, the published)')
    p.add_argument('--warp', type=share, metavar='S',
                   help='the augmentation\'s rotation, shift and shear ranges times S (default 1: the published; '
                   '0: none). Each warp interpolates the image, blending the object\'s rim with its background: '
                   'where the background\'s colour gives the label (Biased-MNIST), phase 3\'s composites leak it')
    size_arg(p)
    precision_arg(p)
    p.add_argument('--threads', type=non_negative_int, metavar='N',
                   help='threads TensorFlow uses within an operation and between operations (default 0: its own '
                   'choice, every core). The order of the sums, and so the last digits of the weights, depend on it: it is '
                   'recorded, and a run resumes only with the same. One each for two runs side by side on 2 cores was '
                   'no faster over whole runs (docs/performance.md)')
    p.add_argument('--strategy', choices=STRATEGIES,
                   help='default: one device; mirrored: all local GPUs; multiworker: the machines in TF_CONFIG '
                   '(the batch size is the global one, split across replicas)')
    p.set_defaults(**settings.defaults())


def rho_list(text):
    """--rho: Biased-MNIST's training correlations, comma-separated, each in (0, 1]."""
    try:
        rhos = [float(t) for t in text.split(',')]
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a comma-separated list of numbers')
    bad = [r for r in rhos if not 0 < r <= 1]
    if bad:
        raise argparse.ArgumentTypeError(f'rho must be in (0, 1], got {bad[0]:g}')
    return rhos


AUTO_PRECISION = 'bfloat16 on a CPU with AMX and no GPU, else float32'   # what recipe_precision('auto') gives


def precision_arg(p, default='float32', default_text=None):
    """--precision: float32, or Keras' mixed bfloat16 (weights and outputs stay float32)."""
    p.add_argument('--precision', type=precision, default=default, metavar='{float32,bfloat16}',
                   help=f'float32 or bfloat16 (default {default_text or default}): in bfloat16 the layers compute in bfloat16, the '
                   'weights, their updates and the outputs stay float32; 1.1-2.4x faster training and 3.4x faster '
                   'evaluation on CPUs with AMX (Intel Xeon of the 4th generation and later, docs/performance.md); '
                   'on CPUs without bfloat16 instructions it is emulated (not measured here: try float32)')


def precision(text):
    """A --precision value; bfloat16 on a machine that has no bfloat16 instructions and no GPU
    gets a note (the run goes on: it is correct, only likely slower)."""
    if text not in PRECISIONS:
        raise argparse.ArgumentTypeError(f"invalid choice: '{text}' (choose from {', '.join(PRECISIONS)})")
    if text == 'bfloat16' and not bfloat16_hardware():
        print('note: this machine shows no bfloat16 instructions (amx_bf16, avx512_bf16) and no GPU: bfloat16 '
              'is emulated here, --precision float32 is likely faster', file=sys.stderr)
    return text


def cpu_flags():
    """The CPU's feature flags, from /proc/cpuinfo (none where it cannot be read)."""
    try:
        with open('/proc/cpuinfo') as f:
            return set(next((l.split(':', 1)[1].split() for l in f if l.startswith('flags')), []))
    except OSError:
        return set()


def nvidia_gpu():
    """Whether the machine has an NVIDIA GPU (its driver lists one)."""
    return os.path.isdir('/proc/driver/nvidia/gpus') and bool(os.listdir('/proc/driver/nvidia/gpus'))


def bfloat16_hardware():
    """Whether this machine computes bfloat16 natively: an NVIDIA GPU, or a CPU with AMX or
    AVX512-BF16."""
    return nvidia_gpu() or bool({'amx_bf16', 'avx512_bf16'} & cpu_flags())


def recipe_precision(precision):
    """A recipe's precision as run here: 'auto' is bfloat16 on a CPU with AMX and no GPU (the
    only hardware the fast recipe was screened and tested on in bfloat16, docs/recipe.md) and
    float32 elsewhere; float32 and bfloat16 are themselves."""
    if precision != 'auto':
        return precision
    return 'bfloat16' if 'amx_bf16' in cpu_flags() and not nvidia_gpu() else 'float32'


def size_arg(p):
    """--size, for a folder data set (myfolders.py)."""
    p.add_argument('--size', type=positive_int, metavar='S',
                   help='a folder data set: resize its images to S x S (needed when they differ in size)')


def schedule_args(p, what, default='1e-3, or 1e-5 for VGG19 from 128 px'):
    """--lr and --lr-schedule (every training script)."""
    p.add_argument('--lr', type=rate, help=f'{what} learning rate (default: {default})')
    p.add_argument('--lr-schedule', choices=SCHEDULES, default='constant',
                   help='constant (published) or cosine decay to 0 over the run')


# ----------------------------------------------------------------------------------------------
# Paths: checked before anything is computed; folders a script chooses itself are made

def check_writable_dir(d, what):
    if not os.path.isdir(d):
        raise UserError(f'{what}: folder {d} does not exist')
    if not os.access(d, os.W_OK | os.X_OK):
        raise UserError(f'{what}: folder {d} is not writable')
    return d


def output_file(path, default, exts=('.keras', '.h5')):
    """The file a script will write: `path` as the user named it (its folder must exist), or
    `default` when none was named (its folders are made)."""
    chosen = path or default
    if os.path.splitext(chosen)[1] not in exts:
        raise UserError(f'output {chosen}: the file name must end in {" or ".join(exts)}')
    folder = os.path.dirname(os.path.abspath(chosen))
    if path is None:
        os.makedirs(folder, exist_ok=True)
    check_writable_dir(folder, f'output {chosen}')
    return chosen


def output_dir(path, default=None, what='output'):
    """A folder a script writes into: made if missing; a folder the user named needs an
    existing parent, a default one gets its parents made too."""
    chosen = path or default
    parent = os.path.dirname(os.path.abspath(chosen))
    if path is None:
        os.makedirs(parent, exist_ok=True)
    if os.path.isdir(chosen):
        check_writable_dir(chosen, f'{what} {chosen}')
    else:
        check_writable_dir(parent, f'{what} {chosen}')
    return chosen


# ----------------------------------------------------------------------------------------------
# Running a script: one-line errors, TensorFlow's log kept out of the way

def mute_native_stderr():
    """TensorFlow's C++ code writes log lines straight to file descriptor 2 (even harmless
    'errors', such as an optional graph rewrite that gave up) and does not see a
    TF_CPP_MIN_LOG_LEVEL set from inside Python. A script therefore points fd 2 at /dev/null and
    keeps Python's own stderr on a copy of the real one: its messages, warnings, tracebacks and
    progress bars still show. BIAL_TF_LOG=1 keeps TensorFlow's log (for debugging)."""
    if os.environ.get('BIAL_TF_LOG'):
        return
    sys.stderr.flush()
    real = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    sys.stderr = os.fdopen(real, 'w', buffering=1)


_AT_END = []   # what run_main does when main() ends, however it ends (mylock's release)


def at_end(fn):
    """Call fn() when the script's main() ends, normally, with an error or on Ctrl-C."""
    _AT_END.append(fn)


def run_main(main):
    """Run a script's main(): bad input and missing resources end in one line on stderr and
    exit 1; Ctrl-C or SIGTERM in a one-line note (how to continue, for a training run) and exit
    130 (143 for SIGTERM)."""
    before = signal.signal(signal.SIGTERM, _terminate)
    try:
        _run_main(main)
    finally:
        signal.signal(signal.SIGTERM, before)
        while _AT_END:
            _AT_END.pop()()


def _run_main(main):
    mute_native_stderr()
    # a line as soon as it is printed, also into a file or a pipe (nohup python reproduce.py > log):
    # otherwise a long run shows nothing there until it ends
    if hasattr(sys.stdout, 'reconfigure'):
        sys.stdout.reconfigure(line_buffering=True)
    try:
        main()
    except UserError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(1)
    except OSError as e:   # disk full, permissions changed under us...
        print(f'error: {e.strerror or e}{": " + str(e.filename) if e.filename else ""}', file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated) or isinstance(e.__context__, Terminated)
        print(f'\n{"terminated" if terminated else "interrupted"}{"; " + str(e) if isinstance(e, Interrupted) else ""}',
              file=sys.stderr)
        sys.exit(143 if terminated else 130)


def start_tensorflow(threads=0):
    """Import TensorFlow with oneDNN on and without its C++ start-up chatter (CUDA probing on a
    CPU-only machine), which is written straight to file descriptor 2 before its logging is set
    up. threads: TensorFlow's threads within and between operations (--threads; 0: its default).
    Call it before importing keras, tensorflow or the modules that do; a second call does
    nothing. Errors still raise as usual."""
    if 'tensorflow' in sys.modules:
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    # oneDNN's kernels are off by default on CPUs without AVX-512 (AMD ones among them); on a
    # 2-core AVX2 machine they made phase 3 about 35% faster (docs/performance.md)
    os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '1')
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf
        _cpu_devices(tf)
        if threads:   # (only before TensorFlow's first operation)
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        if 'TF_CONFIG' not in os.environ:   # several machines need TensorFlow not started yet
            tf.constant(0) + 1   # device start-up happens at the first operation
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _cpu_devices(tf):
    """BIAL_CPU_DEVICES=N splits the CPU into N logical devices, so that --strategy mirrored can
    be tried (and tested) on a machine without GPUs. Must run before TensorFlow's first operation."""
    n = os.environ.get('BIAL_CPU_DEVICES')
    if n:
        if not n.isdigit() or int(n) < 1:
            raise UserError(f'BIAL_CPU_DEVICES must be a whole number >= 1, not {n!r}')
        cpu = tf.config.list_physical_devices('CPU')[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels (True/False; None where this TensorFlow cannot
    say). start_tensorflow() turns them on, but only when it is what starts TensorFlow."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def is_cluster_chief():
    """Whether this task is the chief of the cluster in TF_CONFIG (several machines,
    tf.distribute multiworker), read without starting TensorFlow: the task of type 'chief', or
    worker 0 when the cluster names none. One-line error when TF_CONFIG is missing or unusable."""
    raw = os.environ.get('TF_CONFIG', '').strip()
    if not raw:
        raise UserError('--strategy multiworker needs TF_CONFIG with the cluster and this task '
                        '(see the README, "Several GPUs or machines")')
    try:
        config = json.loads(raw)
        kind, index, members = config['task']['type'], int(config['task']['index']), config['cluster']
        if len(members.get(kind, [])) <= index:
            raise ValueError(f'the cluster has no {kind} number {index}')
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        detail = f'missing {e}' if isinstance(e, KeyError) else str(e)
        raise UserError(f'TF_CONFIG is not a usable cluster description ({detail}); expected '
                        '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}')
    return kind == 'chief' or (kind == 'worker' and index == 0 and 'chief' not in members)
