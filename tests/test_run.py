"""myrun's pieces of a training run, in-process (unit tier): the epoch report (--report) and the
CSV log it feeds."""
import csv

import pytest


class CountingEvaluator:
    def __init__(self):
        self.calls = 0

    def __call__(self, model, names=None):
        self.calls += 1
        return {'clean': 0.5 + 0.1 * self.calls}


@pytest.mark.parametrize('when, evaluated', [('epoch', [1, 2, 3]), ('end', [3]), ('none', [])])
def test_report_evaluates_when_asked(when, evaluated):
    """--report end: the sets are evaluated after the last epoch only, and the closing line's
    numbers (final()) are that one evaluation's, not a second; --report none: never, and no
    closing numbers (reproduce.py evaluates the saved model itself)."""
    import myrun
    ev = CountingEvaluator()
    report = myrun.EpochReport(ev, classifier=None, when=when)
    report.set_params({'epochs': 3, 'steps': 1})
    seen = []
    for epoch in range(3):
        logs = {'loss': 1.0}
        report.on_epoch_end(epoch, logs)
        if 'acc_clean' in logs:
            seen.append(epoch + 1)
    assert seen == evaluated and ev.calls == len(evaluated)
    final = report.final()
    assert ev.calls == len(evaluated)
    assert final == (None if when == 'none' else {'clean': 0.5 + 0.1 * len(evaluated)})


def test_report_of_some_sets_evaluates_every_set_for_the_closing_line():
    """Phase 1 reports one test set after each epoch; its closing line is of every set,
    evaluated then; a frozen classifier (phase 2) is evaluated once however many epochs."""
    import myrun
    calls = []

    def ev(model, names=None):
        calls.append(names)
        return {n: 0.5 for n in (names or ['train', 'clean', 'test'])}
    report = myrun.EpochReport(ev, classifier=None, names=['test'], when='epoch')
    report.set_params({'epochs': 2, 'steps': 1})
    for epoch in range(2):
        report.on_epoch_end(epoch, {})
    assert report.final() == {'train': 0.5, 'clean': 0.5, 'test': 0.5} and calls == [['test'], ['test'], None]
    calls.clear()
    frozen = myrun.EpochReport(ev, classifier=None, frozen=True, when='epoch')
    frozen.set_params({'epochs': 3, 'steps': 1})
    logs = [{} for _ in range(3)]
    for epoch in range(3):
        frozen.on_epoch_end(epoch, logs[epoch])
    assert frozen.final() == {'train': 0.5, 'clean': 0.5, 'test': 0.5} and calls == [None]
    assert all(l == {'acc_train': 0.5, 'acc_clean': 0.5, 'acc_test': 0.5} for l in logs)


def test_csv_log_takes_a_column_that_appears_late(tmp_path):
    """A column that earlier epochs did not have (the accuracies of --report end) is added to the
    header, the earlier rows left empty there, and the file stays one table."""
    import myrun
    path = tmp_path / 'log.csv'
    log = myrun.CSVLog(str(path))
    log.on_epoch_end(0, {'loss': 2.0})
    log.on_epoch_end(1, {'loss': 1.5})
    log.on_epoch_end(2, {'loss': 1.0, 'acc_clean': 0.9})
    log.on_epoch_end(3, {'loss': 0.5, 'acc_clean': 0.95})
    rows = list(csv.reader(open(path)))
    assert rows == [['epoch', 'loss', 'acc_clean'], ['1', '2.0', ''], ['2', '1.5', ''], ['3', '1.0', '0.9'],
                    ['4', '0.5', '0.95']]
    assert [p.name for p in tmp_path.iterdir()] == ['log.csv']   # no temporary file left


@pytest.mark.parametrize('dtype', ['float32', 'uint8'])
def test_evaluator_counts_every_image_as_the_model_does(monkeypatch, dtype):
    """The Evaluator's hits are the model's own predictions, image by image and in order, on sets
    that are not a whole number of batches, span several graph calls (CHUNK), or are empty; uint8
    images are read as /255. Its graph calls cut the same batches as one batch at a time, so the
    predictions are the same to the bit."""
    import keras
    import numpy as np
    import myrun
    monkeypatch.setattr(myrun.Evaluator, 'CHUNK', 2)   # 2 batches a graph call: 23 images take 3 calls
    rng = np.random.default_rng(0)
    x = inp = keras.Input((6, 5, 1))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    sets = []
    for name, n in [('odd', 23), ('one', 1), ('empty', 0)]:
        X = rng.integers(0, 256, (n, 6, 5, 1)).astype(np.uint8)
        X = X if dtype == 'uint8' else X.astype(np.float32) / 255
        Y = rng.integers(0, 3, n)
        sets.append((name, (X, Y)))
    ev = myrun.Evaluator(sets, batch_size=4)
    hits = ev.hits(model)
    assert list(hits) == ['odd', 'one', 'empty']
    for name, (X, Y) in sets:
        assert hits[name].dtype == bool and hits[name].shape == (len(Y),)
        if len(Y):
            Xf = X.astype(np.float32) / 255 if dtype == 'uint8' else X
            pred = np.concatenate([np.argmax(model(Xf[i:i + 4], training=False), -1) for i in range(0, len(X), 4)])
            np.testing.assert_array_equal(hits[name], pred == Y)
    assert ev(model, ['odd']) == {'odd': hits['odd'].mean()}
