"""Jobs that read each other's outputs, run several at a time (reproduce.py's phases, --jobs).

    myschedule.run(jobs, start, width=2, finished=record, stop=interrupt_them, idle=evaluate)

Each job runs in a thread of its own (reproduce.py's start a process each), in the list's order,
once the jobs it needs are finished. The caller's thread only schedules: it records each finished
job (finished), stops the others when one fails (stop), and lends a free slot to `idle` work.
"""
import queue
import threading

POLL = 0.5   # seconds between looks when nothing is reported: Ctrl-C reaches the caller, idle() its turn


def run(jobs, start, width=1, finished=None, stop=None, idle=None, done=()):
    """Run `jobs` (objects with .key and .needs, the keys of the jobs whose outputs each reads), at
    most `width` at once, each as soon as every job it needs is finished (`done`: keys finished
    before this call), the earlier in the list first.

    start(job, slot) runs one job in a thread of its own (slot: a number below `width` that no
    other running job holds) and returns its result or raises. finished(job, result) is called in
    the caller's thread as each job succeeds. The first failure stops the scheduling: stop() is
    called (the running jobs should then end soon), nothing more starts, and the failure is raised
    once they have ended. idle(keys) is called in a thread of its own when fewer than `width` jobs
    run, none can start, and more jobs are finished than at its last call (keys: a frozenset of
    the finished ones, `done` included); one call at a time; run() returns once it is over.
    Ctrl-C: stop(), the running jobs waited for (a minute at most), then re-raised."""
    todo, done = list(jobs), set(done)
    running, reports, failure = {}, queue.Queue(), None
    helper, helped = None, None   # the thread running idle(), and what was finished at its last call

    def work(job, slot):
        try:
            reports.put((job, start(job, slot), None))
        except BaseException as e:   # handed to the caller's thread, which decides
            reports.put((job, None, e))

    try:
        while todo or running:
            ready = [j for j in todo if failure is None and all(k in done for k in j.needs)]
            for job in ready[:width - len(running)]:
                slot = min(set(range(width)) - {s for s, _ in running.values()})
                running[job.key] = (slot, threading.Thread(target=work, args=(job, slot), daemon=True))
                running[job.key][1].start()
                todo.remove(job)
            if idle and failure is None and len(running) < width and not (helper and helper.is_alive()) \
                    and frozenset(done) != helped:
                helped = frozenset(done)
                helper = threading.Thread(target=idle, args=(helped,), daemon=True)
                helper.start()
            if not running:
                break
            try:
                job, result, error = reports.get(timeout=POLL)
            except queue.Empty:
                continue
            running.pop(job.key)[1].join()
            if error is not None:
                if failure is None:   # the first one: the others are stopped because of it
                    failure = error
                    if stop:
                        stop()
                continue
            done.add(job.key)
            if finished:
                finished(job, result)
    except KeyboardInterrupt:
        if stop:
            stop()
        for _, thread in running.values():
            thread.join(timeout=60)
        raise
    if failure is not None:
        raise failure
    if helper is not None:
        helper.join()
