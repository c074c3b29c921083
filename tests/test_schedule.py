"""myschedule.run, reproduce.py's scheduler: order, dependencies, width, the idle slot, failures.
The jobs are driven by events (each waits for its gate), never by sleeps: what a test sees does not
depend on how busy the machine is."""
import collections
import threading

import pytest

import myschedule

WAIT = 30   # seconds: only a failsafe, so that a broken scheduler fails the test instead of hanging it
Job = collections.namedtuple('Job', 'key needs')
# the shape of reproduce.py's plan: phase 1, then the heuristic row and phase 2, the U-Net row (needs
# phase 2), the baseline
PLAN = [Job('p1', []), Job('p3h', ['p1']), Job('p2', ['p1']), Job('p3u', ['p1', 'p2']), Job('att', ['p1'])]


class Jobs:
    """start() for myschedule.run: each job marks that it started, then waits for its gate; it
    fails if told to, and stops at once when stop() is called."""

    def __init__(self, fail=()):
        self.fail, self.log, self.slots = set(fail), [], {}
        self.started = collections.defaultdict(threading.Event)
        self.gate = collections.defaultdict(threading.Event)
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def start(self, job, slot):
        with self.lock:
            self.log.append(job.key)
            self.slots[job.key] = slot
            self.started[job.key].set()
        while not self.gate[job.key].wait(0.01):
            if self.stopped.is_set():
                raise KeyboardInterrupt   # as a phase script on SIGINT
        if job.key in self.fail:
            raise RuntimeError(f'{job.key} failed')
        return f'{job.key} result'

    def stop(self):
        self.stopped.set()

    def release(self, *keys):
        for k in keys:
            self.gate[k].set()

    def wait_started(self, *keys):
        for k in keys:
            assert self.started[k].wait(WAIT), f'{k} never started'


def in_thread(fn, **kw):
    """Run fn(**kw) in a thread; returns (thread, outcome dict with 'error' once it ended)."""
    outcome = {}

    def go():
        try:
            fn(**kw)
        except BaseException as e:
            outcome['error'] = e
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, outcome


def test_two_at_a_time_each_once_its_inputs_are_finished():
    """width 2: phase 1 alone (everything reads it); then the heuristic row and phase 2 side by
    side; the U-Net row waits for phase 2 even with a slot free; never more than 2 at once; each
    finished job is reported in the caller's thread, in the order they finish."""
    jobs, finished = Jobs(), []
    caller = []
    t, outcome = in_thread(myschedule.run, jobs=PLAN, start=jobs.start, width=2,
                           finished=lambda j, r: (finished.append((j.key, r)), caller.append(threading.current_thread())))
    jobs.wait_started('p1')
    assert jobs.log == ['p1']
    jobs.release('p1')
    jobs.wait_started('p3h', 'p2')
    assert jobs.log == ['p1', 'p3h', 'p2'] and {jobs.slots['p3h'], jobs.slots['p2']} == {0, 1}
    jobs.release('p3h')             # a slot is free, but the U-Net row needs phase 2: the baseline goes first
    jobs.wait_started('att')
    assert 'p3u' not in jobs.log
    jobs.release('p2')
    jobs.wait_started('p3u')
    jobs.release('att', 'p3u')
    t.join(WAIT)
    assert not t.is_alive() and 'error' not in outcome
    assert [k for k, _ in finished][:2] == ['p1', 'p3h'] and sorted(k for k, _ in finished) == sorted(j.key for j in PLAN)
    assert all(r == f'{k} result' for k, r in finished)
    assert set(caller) == {t}       # reported in the scheduler's (the caller's) thread


def test_one_at_a_time_in_the_plans_order():
    jobs = Jobs()
    jobs.release(*(j.key for j in PLAN))
    myschedule.run(PLAN, jobs.start, width=1)
    assert jobs.log == [j.key for j in PLAN] and set(jobs.slots.values()) == {0}


def test_jobs_done_before_are_not_run_and_count_as_inputs():
    jobs = Jobs()
    jobs.release(*(j.key for j in PLAN))
    myschedule.run([j for j in PLAN if j.key not in ('p1', 'p2')], jobs.start, width=2, done={'p1', 'p2'})
    assert sorted(jobs.log) == ['att', 'p3h', 'p3u']


def test_a_free_slot_goes_to_idle_one_call_at_a_time():
    """idle(keys) runs when fewer jobs run than the width allows and none can start: with nothing
    finished while phase 1 runs alone, then again only once more is finished (all but the baseline,
    which runs alone at the end); never two calls at once, even while it could; run() returns only
    once the last call is over. With width 1 no slot is ever free."""
    jobs = Jobs()
    calls, overlaps, inside = [], [], threading.Lock()
    gates, entered = [threading.Event(), threading.Event()], [threading.Event(), threading.Event()]
    finished = collections.defaultdict(threading.Event)

    def idle(keys):
        if not inside.acquire(blocking=False):
            overlaps.append(keys)   # (asserted in the test's thread, where a failure counts)
            return
        try:
            n = len(calls)
            calls.append(sorted(keys))
            entered[n].set()
            assert gates[n].wait(WAIT)
        finally:
            inside.release()

    t, outcome = in_thread(myschedule.run, jobs=PLAN, start=jobs.start, width=2, idle=idle,
                           finished=lambda j, r: finished[j.key].set())
    jobs.wait_started('p1')
    assert entered[0].wait(WAIT) and calls == [[]]     # phase 1 alone: nothing finished yet
    jobs.release('p1', 'p3h', 'p2', 'p3u')             # meanwhile all but the baseline finish
    jobs.wait_started('att')
    assert finished['p3u'].wait(WAIT) and len(calls) == 1   # the first call still runs: no second
    gates[0].set()
    assert entered[1].wait(WAIT) and calls[1] == ['p1', 'p2', 'p3h', 'p3u']
    jobs.release('att')
    assert finished['att'].wait(WAIT)
    t.join(0.2)
    assert t.is_alive()                                # run() waits for idle()
    gates[1].set()
    t.join(WAIT)
    assert not t.is_alive() and 'error' not in outcome and overlaps == [] and len(calls) == 2

    jobs, calls = Jobs(), []
    jobs.release(*(j.key for j in PLAN))
    myschedule.run(PLAN, jobs.start, width=1, idle=lambda keys: calls.append(keys))
    assert calls == []


def test_a_failure_stops_the_others_and_is_raised():
    """The heuristic row fails while phase 2 runs: stop() is called, phase 2 ends, nothing more
    starts, only phase 1 is reported finished, and the failure itself is what run() raises."""
    jobs, finished = Jobs(fail={'p3h'}), []
    t, outcome = in_thread(myschedule.run, jobs=PLAN, start=jobs.start, width=2, stop=jobs.stop,
                           finished=lambda j, r: finished.append(j.key))
    jobs.release('p1')
    jobs.wait_started('p3h', 'p2')
    jobs.release('p3h')
    t.join(WAIT)
    assert not t.is_alive() and jobs.stopped.is_set()
    assert isinstance(outcome.get('error'), RuntimeError) and str(outcome['error']) == 'p3h failed'
    assert jobs.log == ['p1', 'p3h', 'p2'] and finished == ['p1']


def test_ctrl_c_in_a_job_stops_the_others():
    """A job's KeyboardInterrupt (a phase script stopped by Ctrl-C) stops the others and reaches
    the caller as a KeyboardInterrupt (reproduce.py's exit 130)."""
    jobs = Jobs()

    def start(job, slot):
        if job.key == 'p1':
            raise KeyboardInterrupt   # stands for Ctrl-C reaching the scheduler through a job
        return jobs.start(job, slot)
    with pytest.raises(KeyboardInterrupt):
        myschedule.run(PLAN, start, width=2, stop=jobs.stop)
    assert jobs.stopped.is_set() and jobs.log == []
