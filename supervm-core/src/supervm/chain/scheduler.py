"""The Block-STM collaborative scheduler, guarded by one lock.

Follows the scheduler of Gelashvili et al., "Block-STM: Scaling Blockchain
Execution by Turning Ordering Curse to a Performance Blessing" (2022): two
indices walk the block handing out execution and validation tasks; an aborted
validation re-schedules the transaction with a higher incarnation and makes
every higher transaction validate again.
"""

from __future__ import annotations

import threading

__all__ = ["Scheduler", "Task"]

READY, EXECUTING, EXECUTED, ABORTING = range(4)

#: ("execute" | "validate", transaction index, incarnation)
Task = tuple[str, int, int]


class Scheduler:
    """Hands out execution and validation tasks until every transaction is validated."""

    def __init__(self, count: int, finished: set[int] | None = None) -> None:
        self.count = count
        self.lock = threading.Condition()
        self.execution_idx = 0
        self.validation_idx = 0
        self.active = 0
        self.done = False
        self.incarnation = [0] * count
        self.status = [READY] * count
        self.dependents: list[set[int]] = [set() for _ in range(count)]
        #: Transactions already final (the owned-object fast path): never run or validated.
        self.finished = finished or set()
        for index in self.finished:
            self.status[index] = EXECUTED

    # All methods below are called with self.lock held.

    def _check_done(self) -> None:
        if (
            self.execution_idx >= self.count
            and self.validation_idx >= self.count
            and self.active == 0
        ):
            self.done = True
            self.lock.notify_all()

    def _try_incarnate(self, index: int) -> Task | None:
        if index < self.count and self.status[index] == READY:
            self.status[index] = EXECUTING
            return ("execute", index, self.incarnation[index])
        self.active -= 1
        self._check_done()
        return None

    def next_task(self) -> Task | None:
        """The next task, or None when there is nothing to do right now.

        Indices whose transaction needs nothing (not executed yet, or already
        executing) are skipped in the same call: returning None for them would
        send the worker to wait while the other indices still hold work.
        """
        while not self.done:
            if self.validation_idx < self.execution_idx:
                index = self.validation_idx
                self.validation_idx += 1
                if self.status[index] == EXECUTED and index not in self.finished:
                    self.active += 1
                    return ("validate", index, self.incarnation[index])
                continue
            if self.execution_idx < self.count:
                index = self.execution_idx
                self.execution_idx += 1
                self.active += 1
                task = self._try_incarnate(index)
                if task is not None:
                    return task
                continue
            self._check_done()
            return None
        return None

    def add_dependency(self, index: int, blocking: int) -> bool:
        """Park ``index`` until ``blocking`` executes; False if it already has."""
        if self.status[blocking] == EXECUTED:
            return False
        self.status[index] = ABORTING
        self.dependents[blocking].add(index)
        self.active -= 1
        return True

    def _set_ready(self, index: int) -> None:
        self.incarnation[index] += 1
        self.status[index] = READY

    def finish_execution(self, index: int, incarnation: int, wrote_new_key: bool) -> Task | None:
        """Record an execution; may return the validation of the same transaction."""
        self.status[index] = EXECUTED
        waiting = self.dependents[index]
        self.dependents[index] = set()
        if waiting:
            for dependent in waiting:
                self._set_ready(dependent)
            self.execution_idx = min(self.execution_idx, min(waiting))
        if self.validation_idx > index:
            if not wrote_new_key:
                return ("validate", index, incarnation)
            self.validation_idx = min(self.validation_idx, index)
        self.active -= 1
        self._check_done()
        self.lock.notify_all()
        return None

    def try_abort(self, index: int, incarnation: int) -> bool:
        """Abort a failed validation unless the incarnation was already aborted."""
        if self.incarnation[index] == incarnation and self.status[index] == EXECUTED:
            self.status[index] = ABORTING
            return True
        return False

    def finish_validation(self, index: int, aborted: bool) -> Task | None:
        """Record a validation; an abort re-executes the transaction at once."""
        if aborted:
            self._set_ready(index)
            self.validation_idx = min(self.validation_idx, index + 1)
            if self.execution_idx > index:
                return self._try_incarnate(index)
        self.active -= 1
        self._check_done()
        self.lock.notify_all()
        return None
