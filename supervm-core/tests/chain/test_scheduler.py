"""The Block-STM scheduler on its own: task order, dependencies, aborts, done detection.

The scheduler's methods are called with its lock held, as the parallel run does.
"""

from __future__ import annotations

from supervm.chain.scheduler import Scheduler, Task


def tasks(scheduler: Scheduler, limit: int = 100) -> list[Task]:
    """Every task handed out now, in order, until next_task returns None."""
    out: list[Task] = []
    with scheduler.lock:
        while len(out) < limit:
            task = scheduler.next_task()
            if task is None:
                break
            out.append(task)
    return out


def test_executions_are_handed_out_in_index_order() -> None:
    scheduler = Scheduler(3)
    assert tasks(scheduler) == [("execute", 0, 0), ("execute", 1, 0), ("execute", 2, 0)]
    assert not scheduler.done  # three executions are still running
    assert scheduler.active == 3


def test_a_finished_execution_is_validated_by_the_same_worker() -> None:
    scheduler = Scheduler(2)
    assert tasks(scheduler) == [("execute", 0, 0), ("execute", 1, 0)]
    with scheduler.lock:
        # The validation index already passed 0 (it was executing): the worker that
        # finished it validates it, unless it wrote a new key.
        assert scheduler.finish_execution(0, 0, wrote_new_key=False) == ("validate", 0, 0)
        assert scheduler.finish_execution(1, 0, wrote_new_key=True) is None
        assert scheduler.validation_idx == 1
    # A new key may invalidate higher transactions: validation restarts from 1.
    assert tasks(scheduler) == [("validate", 1, 0)]


def test_validations_follow_executions_and_the_run_ends_when_all_are_validated() -> None:
    scheduler = Scheduler(2)
    with scheduler.lock:
        assert scheduler.next_task() == ("execute", 0, 0)
        assert scheduler.finish_execution(0, 0, wrote_new_key=True) is None
        assert scheduler.next_task() == ("validate", 0, 0)
        assert scheduler.next_task() == ("execute", 1, 0)
        assert scheduler.finish_validation(0, aborted=False) is None
        assert not scheduler.done
        assert scheduler.finish_execution(1, 0, wrote_new_key=True) is None
        assert scheduler.next_task() == ("validate", 1, 0)
        assert not scheduler.done
        assert scheduler.finish_validation(1, aborted=False) is None
        assert scheduler.done
        assert scheduler.active == 0
        assert scheduler.next_task() is None


def run_clean(scheduler: Scheduler) -> list[Task]:
    """Execute and validate everything without conflicts; the tasks done, in order."""
    done = []
    pending = tasks(scheduler)
    while pending:
        task = pending.pop(0)
        done.append(task)
        kind, index, incarnation = task
        with scheduler.lock:
            if kind == "execute":
                follow = scheduler.finish_execution(index, incarnation, wrote_new_key=True)
            else:
                follow = scheduler.finish_validation(index, aborted=False)
        if follow is not None:
            pending.insert(0, follow)
        pending += [task for task in tasks(scheduler) if task not in pending]
    return done


def test_every_transaction_is_executed_and_validated_once_without_conflicts() -> None:
    scheduler = Scheduler(4)
    done = run_clean(scheduler)
    assert sorted(done) == sorted(
        [("execute", i, 0) for i in range(4)] + [("validate", i, 0) for i in range(4)]
    )
    assert scheduler.done


def test_a_dependency_parks_the_reader_until_the_writer_finishes() -> None:
    scheduler = Scheduler(3)
    assert tasks(scheduler) == [("execute", 0, 0), ("execute", 1, 0), ("execute", 2, 0)]
    with scheduler.lock:
        # 2 met an estimate of 0, which is still executing: 2 waits.
        assert scheduler.add_dependency(2, blocking=0) is True
        assert scheduler.active == 2
        # 1 met an estimate of 0 too.
        assert scheduler.add_dependency(1, blocking=0) is True
        assert scheduler.finish_execution(0, 0, wrote_new_key=True) is None
        # Both readers are ready again, with a new incarnation, from the lowest one.
        assert scheduler.incarnation[1:] == [1, 1]
        assert scheduler.execution_idx == 1
    assert tasks(scheduler) == [("validate", 0, 0), ("execute", 1, 1), ("execute", 2, 1)]


def test_no_dependency_on_a_writer_that_already_executed() -> None:
    scheduler = Scheduler(2)
    tasks(scheduler)
    with scheduler.lock:
        scheduler.finish_execution(0, 0, wrote_new_key=True)
        assert scheduler.add_dependency(1, blocking=0) is False  # 1 simply reads again
        assert scheduler.status[1] != scheduler.status[0]


def test_an_abort_re_executes_at_once_and_makes_higher_transactions_validate_again() -> None:
    scheduler = Scheduler(3)
    assert tasks(scheduler) == [("execute", 0, 0), ("execute", 1, 0), ("execute", 2, 0)]
    with scheduler.lock:
        assert scheduler.finish_execution(0, 0, wrote_new_key=False) == ("validate", 0, 0)
        assert scheduler.finish_execution(1, 0, wrote_new_key=False) == ("validate", 1, 0)
        assert scheduler.finish_execution(2, 0, wrote_new_key=False) == ("validate", 2, 0)
        # The validation of 0 fails: 0 runs again at once, with the next incarnation.
        assert scheduler.try_abort(0, 0) is True
        assert scheduler.try_abort(0, 0) is False  # one abort per incarnation
        assert scheduler.finish_validation(0, aborted=True) == ("execute", 0, 1)
        assert scheduler.validation_idx == 1
        # The validations of 1 and 2 under way pass, but count for nothing.
        assert scheduler.finish_validation(1, aborted=False) is None
        assert scheduler.finish_validation(2, aborted=False) is None
        assert not scheduler.done
        # The re-execution wrote no new key: it validates itself ...
        assert scheduler.finish_execution(0, 1, wrote_new_key=False) == ("validate", 0, 1)
        assert scheduler.try_abort(0, 0) is False  # an old incarnation cannot abort
        assert scheduler.finish_validation(0, aborted=False) is None
    # ... and every higher transaction validates again.
    assert tasks(scheduler) == [("validate", 1, 0), ("validate", 2, 0)]
    with scheduler.lock:
        scheduler.finish_validation(1, aborted=False)
        assert not scheduler.done
        scheduler.finish_validation(2, aborted=False)
        assert scheduler.done
        assert scheduler.active == 0


def test_an_abort_above_the_execution_index_waits_for_it() -> None:
    scheduler = Scheduler(3)
    assert tasks(scheduler) == [("execute", 0, 0), ("execute", 1, 0), ("execute", 2, 0)]
    with scheduler.lock:
        assert scheduler.finish_execution(2, 0, wrote_new_key=False) == ("validate", 2, 0)
        assert scheduler.add_dependency(1, blocking=0)
        # 0 finishes and wakes 1: execution goes back to 1, validation to 0.
        assert scheduler.finish_execution(0, 0, wrote_new_key=True) is None
        assert (scheduler.execution_idx, scheduler.validation_idx) == (1, 0)
        # 2's validation fails; it will run again when execution gets to it.
        assert scheduler.try_abort(2, 0)
        assert scheduler.finish_validation(2, aborted=True) is None
        assert scheduler.incarnation[2] == 1
    assert tasks(scheduler) == [("validate", 0, 0), ("execute", 1, 1), ("execute", 2, 1)]


def test_finished_transactions_are_neither_executed_nor_validated() -> None:
    scheduler = Scheduler(4, finished={0, 2})
    done = run_clean(scheduler)
    assert sorted(done) == [
        ("execute", 1, 0),
        ("execute", 3, 0),
        ("validate", 1, 0),
        ("validate", 3, 0),
    ]
    assert scheduler.done


def test_an_empty_block_is_done_at_once() -> None:
    scheduler = Scheduler(0)
    assert tasks(scheduler) == []
    assert scheduler.done
    scheduler = Scheduler(2, finished={0, 1})
    assert tasks(scheduler) == []
    assert scheduler.done
