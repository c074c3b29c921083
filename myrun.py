"""Everything around fit() that the three phases share: the distribution strategy, evaluation
after each epoch, the CSV log, checkpoints and resume, the NaN guard, and the end of a run.

    strategy = myrun.setup(s.seed, s.strategy)              # seeds, tf.distribute strategy
    run = myrun.Run(s.output, s.record(), s.resume, myrun.is_chief(strategy))
    start = run.restore(trainer)                            # epochs already done (resume)
    run.fit(trainer, batches, steps, epochs, report)       # checkpoint and log every epoch
    run.finish(report.final(), {output: model})             # CSV line, atomic saves

Files of a run (beside OUTPUT): OUTPUT-log.csv, one row per epoch; OUTPUT-checkpoint/epoch-NNNN/,
the whole state after the last finished epoch, removed once the final model is saved.
"""
import contextlib
import csv
import json
import math
import os
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf

import mycli
import mydatagen
import mydatasets
import mymodels
from myfiles import Damaged, atomic, fault, fault_armed, read_json, write_text
from mymodels import ModelError, load, save

# training steps per call into the TensorFlow graph: at batch size 8 a step is a few milliseconds,
# and Keras' per-call Python work would otherwise cost as much again (benchmark.py measures it)
STEPS_PER_EXECUTION = 32
PROGRESS_FD = 'BIAL_PROGRESS_FD'   # reproduce.py reads each phase's finished steps from this file descriptor


def setup(seed=mycli.SEED, strategy='default'):
    """Seeds everywhere (Python, numpy, TensorFlow, Keras) and the distribution strategy named
    (made first: multiworker must start before any other TensorFlow work)."""
    import logging
    import warnings
    logging.getLogger('absl').setLevel(logging.ERROR)
    logging.getLogger('tensorflow').setLevel(logging.ERROR)   # retracing notes of short fits
    warnings.filterwarnings('ignore', message='You are saving your model as an HDF5 file')
    warnings.filterwarnings('ignore', message='Skipping variable loading for optimizer')
    strategy = make_strategy(strategy)
    keras.utils.set_random_seed(seed)
    return strategy


def start(s, masks=False):
    """The beginning of every training script, after its settings `s` (mysettings): seeds and
    strategy, the data set (its subset, test subset, size; its own masks if asked for), the batch
    size checked against it. Returns (strategy, data, training steps an epoch)."""
    strategy = setup(s.seed, s.strategy)
    data = mydatasets.dataset(s.dataset, s.subset, s.test_subset, s.size, masks)
    mydatagen.check_batch(len(data.train[0]), s.batchsize)
    check_replicas(strategy, s.batchsize)
    return strategy, data, len(data.train[0]) // s.batchsize


def prepare_classifier(model, default_lr, s, steps):
    """A classifier compiled for a training run of settings `s`: Adam at s.lr (else `default_lr`),
    constant or decayed over the run's s.epochs x `steps` (s.lr_schedule), as many steps a graph
    call as the epoch allows, and the optimiser built (so that a checkpoint can be loaded into it)."""
    mymodels.compile_classifier(model, mymodels.adam(s.lr or default_lr, s.lr_schedule, s.epochs * steps),
                                steps_per_execution(steps))
    model.optimizer.build(model.trainable_variables)
    return model


def steps_per_execution(steps_per_epoch=None):
    """Training steps per graph call: the largest divisor of steps_per_epoch up to
    STEPS_PER_EXECUTION, because Keras runs whole graph calls, so that 16 steps an epoch at 32
    steps a call would silently train 32. 1 with several replicas, where Keras 3's multi-step
    loop fails under tf.distribute ("You must feed a value for placeholder tensor", Keras issue
    19246), and where the devices are big enough for the per-call overhead not to matter."""
    if tf.distribute.get_strategy().num_replicas_in_sync > 1:
        return 1
    if steps_per_epoch is None:
        return STEPS_PER_EXECUTION
    return max(d for d in range(1, STEPS_PER_EXECUTION + 1) if steps_per_epoch % d == 0)


# ----------------------------------------------------------------------------------------------
# Several devices or machines: TensorFlow's distribution strategies (tf.distribute)

def make_strategy(name='default'):
    """default: one device. mirrored: every local GPU (without GPUs: every logical CPU device,
    one unless BIAL_CPU_DEVICES says more). multiworker: the machines named in TF_CONFIG, each
    with its local GPUs."""
    if name not in mycli.STRATEGIES:
        raise mycli.UserError(f'unknown strategy {name!r}; choose one of {", ".join(mycli.STRATEGIES)}')
    if name == 'multiworker':
        mycli.is_cluster_chief()   # a one-line error for a missing or unusable TF_CONFIG
    if name == 'default':
        return tf.distribute.get_strategy()
    if name == 'mirrored':
        devices = tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU')
        return tf.distribute.MirroredStrategy([d.name for d in devices])

    class MultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy as Keras 3's fit() calls it (Keras 3.15): fit reduces a
        whole (images, labels) batch in one call to learn its shapes, and each step's scalar
        logs with axis=0; this strategy's reduce takes one value at a time and no axis on a
        scalar. Both are done here as meant: element by element, scalars across replicas."""

        def reduce(self, reduce_op, value, axis):
            if isinstance(value, (tuple, list, dict)):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
                axis = None
            return super().reduce(reduce_op, value, axis)

    return MultiWorker()


def is_chief(strategy):
    """Only the chief (worker 0 when TF_CONFIG names no chief) writes checkpoints and models."""
    return strategy.extended.should_checkpoint


def check_replicas(strategy, batch_size):
    """The global batch must split evenly across the replicas; says how it is split."""
    r = strategy.num_replicas_in_sync
    if batch_size % r:
        raise mycli.UserError(f'the batch size ({batch_size}) must be a multiple of the {r} replicas '
                              f'of the strategy: it is the global batch, split evenly across them')
    if strategy is not tf.distribute.get_strategy():
        print(f'{type(strategy).__name__}: {r} replica(s) in sync, {batch_size // r} images each per step',
              file=sys.stderr)


# ----------------------------------------------------------------------------------------------
# Evaluation after each epoch

class Evaluator:
    """Accuracy of a classifier on named sets at a large batch size. Each set goes into the graph
    a chunk of CHUNK batches at a time, as the array it is (a few tens of MB copied a call), and
    the graph loops over the chunk's batches: no Python round trip per batch, and no copy of the
    sets held beside them (a tf.data pipeline from_tensor_slices held two: 2.8 GB more for the
    table's 33 test sets of 1.35 GB, the most of reproduce.py's peak memory). A set on disk (a
    large folder data set) is read a chunk at a time."""
    CHUNK = 16   # batches a graph call

    def __init__(self, sets, batch_size=1024):
        self.names = [n for n, _ in sets]
        self.sets = {n: (X, Y.astype('int32')) for n, (X, Y) in sets}
        self.batch_size = batch_size
        self._fns = {}

    def _counter(self, model):
        if id(model) not in self._fns:
            bs = self.batch_size

            @tf.function(reduce_retracing=True)
            def correct(X, Y):   # the batches of a chunk, in order, as tf.data's batch() cut them
                batches = (tf.shape(X)[0] + bs - 1) // bs
                hits = tf.TensorArray(tf.bool, size=batches, infer_shape=False)
                for k in tf.range(batches):
                    x = mydatagen.to_float(X[k * bs:(k + 1) * bs])
                    pred = tf.argmax(model(x, training=False), -1, output_type=tf.int32)
                    hits = hits.write(k, pred == Y[k * bs:(k + 1) * bs])
                return hits.concat()
            self._fns[id(model)] = correct
        return self._fns[id(model)]

    def hits(self, model, names=None):
        """Per set, whether each of its images is classified correctly (a bool array, in order)."""
        correct, step = self._counter(model), self.CHUNK * self.batch_size
        out = {}
        for n in names or self.names:
            X, Y = self.sets[n]
            out[n] = np.concatenate([correct(X[i:i + step], Y[i:i + step]).numpy() for i in range(0, len(X), step)]
                                    or [np.zeros(0, bool)])
        return out

    def __call__(self, model, names=None):
        """Per set, the share of its images classified correctly."""
        return {n: int(h.sum()) / len(h) for n, h in self.hits(model, names).items()}


class EpochReport(keras.callbacks.Callback):
    """After each epoch: accuracy of `classifier` on the named sets (all by default), added to the
    epoch's logs, which fit's progress line and the CSV log show; final(): the accuracies of the
    run's closing line (every set). `weights`: a context in which the classifier holds the weights
    to report (phase 3's averaged ones). frozen: the classifier does not learn (phase 2), so it is
    evaluated once. when (--report): 'epoch' after every epoch (published); 'end' after the last
    only; 'none' never, and no closing line (reproduce.py evaluates the saved models itself).
    Evaluating changes nothing in training, so the model is the same to the bit whichever."""

    def __init__(self, evaluator, classifier, names=None, weights=contextlib.nullcontext, frozen=False, when='epoch'):
        super().__init__()
        self.evaluator, self.classifier, self.names = evaluator, classifier, names
        self.weights, self.frozen, self.when = weights, frozen, when
        self.last = {}

    def _evaluate(self, names):
        if self.frozen and self.last and names == self.names:   # what it gave the last time
            return self.last
        with self.weights():
            return self.evaluator(self.classifier, names)

    def on_epoch_end(self, epoch, logs=None):
        if self.when == 'none' or self.when == 'end' and epoch + 1 < self.params.get('epochs', epoch + 1):
            return
        self.last = self._evaluate(self.names)
        if logs is not None:   # fit's progress line and the CSV log show them from here
            logs.update({f'acc_{n}': a for n, a in self.last.items()})

    def final(self):
        """Every set's accuracy for the closing line (None under --report none): the last
        epoch's if that evaluated every set, else evaluated now."""
        if self.when == 'none':
            return None
        if self.names is None and self.last:
            return self.last
        self.last = self._evaluate(None)
        return self.last


# ----------------------------------------------------------------------------------------------
# The callbacks of a run: NaN guard, CSV log, checkpoints, progress for reproduce.py

class GuardNaN(keras.callbacks.Callback):
    """Stop with a clear message when an epoch's loss is not finite, before that epoch is logged
    or checkpointed: the last good checkpoint stays. (BIAL_FAULT=nan@EPOCH poisons a weight at
    the start of that epoch, for the tests.)"""

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_epoch_begin(self, epoch, logs=None):
        if fault_armed('nan', epoch + 1):
            w = self.model.trainable_variables[0]
            w.assign(w * float('nan'))

    def on_epoch_end(self, epoch, logs=None):
        bad = [k for k, v in (logs or {}).items() if not math.isfinite(float(v))]
        if bad:
            kept = f'the checkpoint of epoch {epoch} is kept in {self.directory}' if epoch else 'no epoch had finished'
            raise ModelError(f'the loss ({bad[0]}) became {float(logs[bad[0]])} during epoch {epoch + 1}; '
                             f'training stopped; {kept}; try a lower learning rate (--lr)')


class CSVLog(keras.callbacks.Callback):
    """One row per epoch (1-based) with every number of the epoch's logs, flushed at once.
    (Keras' CSVLogger adds empty val_* columns when there is no validation data.)"""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        rows = []
        if os.path.exists(self.path) and os.path.getsize(self.path):
            with open(self.path, newline='') as f:
                rows = list(csv.reader(f))
        header = rows[0] if rows else ['epoch']
        new = sorted(k for k in logs if k not in header)
        if new or not rows:   # a column that earlier epochs did not have (--report end): written anew
            header = header + new
            with atomic(self.path) as tmp, open(tmp, 'w', newline='') as f:
                csv.writer(f).writerows([header] + [r + [''] * len(new) for r in rows[1:]])
        with open(self.path, 'a', newline='') as f:
            csv.writer(f).writerow([epoch + 1] + [float(logs[k]) if k in logs else '' for k in header[1:]])
            f.flush()
            os.fsync(f.fileno())


class Checkpointer(keras.callbacks.Callback):
    """At each epoch's end: the whole training state (every model's weights, the optimisers, the
    random generator) and a copy of the CSV log, written atomically as DIR/epoch-NNNN/; then all
    but it and the one before it are removed. A kill at any moment leaves the previous one in
    place, and a newest one damaged later (a disk error, a bad copy) leaves the one before."""

    def __init__(self, directory, log_path, config):
        super().__init__()
        self.directory, self.log_path, self.config = directory, log_path, config

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        name = f'epoch-{epoch + 1:04d}'
        with atomic(os.path.join(self.directory, name)) as tmp:
            os.makedirs(tmp)
            self.model.save_weights(os.path.join(tmp, 'state.weights.h5'))
            fault('checkpoint-write', epoch + 1)
            if os.path.exists(self.log_path):
                shutil.copyfile(self.log_path, os.path.join(tmp, 'log.csv'))
            with open(os.path.join(tmp, 'meta.json'), 'w') as f:
                json.dump({'epoch': epoch + 1, 'config': self.config}, f)
        fault('checkpoint-renamed', epoch + 1)
        kept = {name, f'epoch-{epoch:04d}'}
        for d in os.listdir(self.directory):
            if d not in kept:   # older checkpoints, and what an interrupted write left
                shutil.rmtree(os.path.join(self.directory, d), ignore_errors=True)


class Progress(keras.callbacks.Callback):
    """Under reproduce.py (PROGRESS_FD set): the steps finished in the run so far, one number a
    line, after each graph call, so that it can show a bar over steps with a time estimate."""

    def __init__(self, fd):
        super().__init__()
        self.fd = fd

    def on_train_batch_end(self, batch, logs=None):
        os.write(self.fd, f'{self.epoch * self.params["steps"] + batch + 1}\n'.encode())

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch


# ----------------------------------------------------------------------------------------------
# A training run

class Run:
    """The files of one training run: the final model OUTPUT, its CSV log OUTPUT-log.csv and its
    checkpoints in OUTPUT-checkpoint/ (all beside OUTPUT). With several machines (multiworker),
    only the chief writes; the other workers only read a checkpoint to resume from."""

    def __init__(self, output, config, resume=False, chief=True):
        stem = os.path.splitext(output)[0]
        self.output, self.config, self.resume, self.chief = output, config, resume, chief
        self.log_path = stem + '-log.csv'
        self.directory = stem + '-checkpoint'
        self.start = 0

    def checkpoints(self):
        """The checkpoints in the run's folder, newest first."""
        if not os.path.isdir(self.directory):
            return []
        done = sorted((d for d in os.listdir(self.directory) if d.startswith('epoch-')), reverse=True)
        return [os.path.join(self.directory, d) for d in done]

    def restore(self, model):
        """With resume: load the newest checkpoint that can be read into `model` (built,
        optimisers built; a damaged newest one gives way to the one before it, with a note) and
        return the number of epochs it holds; else start over and return 0."""
        found = self.checkpoints() if self.resume else []
        if not found:
            if self.resume:
                print('note: no checkpoint to resume from; starting from epoch 1', file=sys.stderr)
            if self.chief:
                shutil.rmtree(self.directory, ignore_errors=True)
                if os.path.exists(self.log_path):
                    os.remove(self.log_path)
            return 0
        damaged = []
        for latest in found:
            try:
                meta = read_checkpoint(latest, model)
                break
            except Damaged as e:
                damaged.append(str(e))
        else:
            raise ModelError('; '.join(damaged) + '; no checkpoint left to resume from; run without --resume to start over')
        for d in damaged:
            print(f'note: {d}; resuming from the one before it, {latest}', file=sys.stderr)
        if self.chief:   # the damaged ones go: their epochs are trained, and checkpointed, again
            for newer in found[:len(damaged)]:
                shutil.rmtree(newer, ignore_errors=True)
        different = {k: (v, self.config.get(k)) for k, v in meta['config'].items() if self.config.get(k) != v}
        if different:
            k, (old, new) = next(iter(different.items()))
            raise ModelError(f'checkpoint {latest} was made with {k}={old}, not {new}; '
                             'use the same settings, or run without --resume to start over')
        log = os.path.join(latest, 'log.csv')
        if os.path.exists(log) and self.chief:
            shutil.copyfile(log, self.log_path)   # drops rows of an epoch that was not checkpointed
        print(f'resuming after epoch {meta["epoch"]} from {latest}', file=sys.stderr)
        self.start = meta['epoch']
        return self.start

    def fit(self, model, data, steps_per_epoch, epochs, report, *callbacks):
        """model.fit from the epoch restore() found, with the run's callbacks (NaN guard, the
        epoch report, CSV log and checkpoint on the chief) and `callbacks`. Ctrl-C stops it
        with a note on how to continue."""
        own = [GuardNaN(self.directory), report]
        if self.chief:
            own += [CSVLog(self.log_path), Checkpointer(self.directory, self.log_path, self.config)]
        if os.environ.get(PROGRESS_FD):
            own.append(Progress(int(os.environ[PROGRESS_FD])))
        try:
            model.fit(data, steps_per_epoch=steps_per_epoch, epochs=epochs, initial_epoch=self.start,
                      callbacks=own + list(callbacks), verbose=1 if sys.stdout.isatty() else 2, shuffle=False)
        except KeyboardInterrupt:
            raise mycli.Interrupted(f'run the same command with --resume to continue from {self.directory}')

    def finish(self, accuracies, models, class_names=None):
        """The end of every phase: the published CSV line on stdout (none if `accuracies` is None:
        --report none), each model saved atomically ({path: model}) with, for a data set whose
        classes have names (a folder), the names beside it (NAME-classes.txt), then the checkpoint
        removed (a kill before that only means redoing this)."""
        if accuracies is not None:
            print(csv_line(accuracies.values()), flush=True)
        if not self.chief:
            print('not saved here: this worker is not the chief', file=sys.stderr)
            return
        for path, model in models.items():
            save(model, path)
            if class_names:
                write_text(classes_path(path), '\n'.join(class_names) + '\n')
        fault('before-finish')
        shutil.rmtree(self.directory, ignore_errors=True)
        print(f'saved {" and ".join(models)}', file=sys.stderr)


def read_checkpoint(folder, model):
    """Load the checkpoint in `folder` into `model`; its meta.json ({'epoch', 'config'}).
    Damaged (one line naming the file that cannot be read) when either file cannot be."""
    valid = lambda m: isinstance(m, dict) and isinstance(m.get('epoch'), int) and m['epoch'] > 0 \
        and isinstance(m.get('config'), dict)
    meta = read_json(os.path.join(folder, 'meta.json'), valid)
    if meta is None:
        raise Damaged(f'{os.path.join(folder, "meta.json")} is missing')
    state = os.path.join(folder, 'state.weights.h5')
    try:
        model.load_weights(state)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Damaged(f'checkpoint file {state} cannot be read ({msg[:200]})') from None
    return meta


def train_classifier(model, data, output, record, s, strategy):
    """Phase 1's training of a compiled classifier (train1.py; train_att.py's global branch and
    fusion model): augmented batches of the training set, validation on the last test set after
    each epoch, the run's log and checkpoints beside `output`, the model saved there at the end.
    record: the settings' record (mysettings) its checkpoints keep; s: the settings."""
    X, Y = data.train
    run = Run(output, record, s.resume, is_chief(strategy))
    with strategy.scope():
        start = run.restore(model)
    evaluator = Evaluator(data.sets, s.eval_batchsize)
    report = EpochReport(evaluator, model, names=[data.tests[-1][0]], when=s.report)   # the last test set
    batches = mydatagen.distribute(strategy, s.batchsize, lambda part: mydatagen.batches(
        X, Y, s.batchsize, seed=s.seed, start_epoch=start, part=part, flip=s.flip, warp=s.warp))
    run.fit(model, batches, len(X) // s.batchsize, s.epochs, report)
    run.finish(report.final(), {output: model}, data.class_names)


def classes_path(model_path):
    """Where the class names of a model trained on a folder data set are kept: beside it."""
    return os.path.splitext(model_path)[0] + '-classes.txt'


def load_model(path, kind, data, precision='float32'):
    """mymodels.load for `data`: a `kind` model of its image shape (and class count, for a
    classifier) trained, if it was trained on a folder data set, on classes of the same names;
    computing in `precision` (mymodels.in_precision)."""
    model = load(path, kind, data.shape, data.classes if kind == 'classifier' else None)
    check_classes(path, data)
    return mymodels.in_precision(model, precision)


def check_classes(model_path, data):
    """A model trained on a folder data set knows its classes by name: a data set with other
    names, or in another order, would be scored against the wrong labels."""
    path = classes_path(model_path)
    if data.class_names and os.path.exists(path):
        with open(path) as f:
            trained = f.read().split('\n')[:-1]
        if trained != data.class_names:
            raise mycli.UserError(f'{model_path} was trained on the classes {", ".join(trained)} ({path}), '
                                  f'but {data.name} has {", ".join(data.class_names)}')


def csv_line(accuracies):
    """The published scripts' result line: the command, then the accuracies, comma-separated."""
    return ','.join(['-'.join([os.path.basename(sys.argv[0])] + sys.argv[1:])] + [str(a) for a in accuracies])
