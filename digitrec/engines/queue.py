"""The fair queue: at most K training runs at once on this server, the others wait their turn.

A server is shared by a classroom. Each run is a worker process that wants a
core of its own, so ``RunQueue`` lets at most ``max_runs()`` of them train at
once (``DIGITREC_MAX_RUNS``, default: cores - 1, at least 1: one core stays
with the page processes). A run submitted while every slot is taken waits;
when a slot frees, the waiting run whose owner (a browser session) has the
fewest runs training goes next; among equals, the owner served longest ago
(never served comes first), then the earliest run. A learner who starts
several runs takes turns with the others and never starves them.

The queue knows runs only through three methods: ``launch()`` (called when it
is the run's turn, outside the queue's lock), ``remaining_s()`` (seconds of
training left, nan if unknown: for the wait estimate), and the ``owner``
attribute. A run calls ``finished(run)`` when its process has ended.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Protocol

from digitrec import config


class Queued(Protocol):
    owner: str | None

    def launch(self) -> None: ...
    def remaining_s(self) -> float: ...


def max_runs() -> int:
    """K: runs allowed to train at once (``DIGITREC_MAX_RUNS`` or cores - 1, at least 1)."""
    text = os.environ.get(config.MAX_RUNS_ENV, "").strip()
    if text:
        try:
            return max(1, int(text))
        except ValueError:
            pass  # a typo in the environment must not stop the server; fall back to the default
    return max(1, (os.cpu_count() or 2) - 1)


class RunQueue:
    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots if slots is not None else max_runs()
        self._lock = threading.Lock()
        self._running: list[Queued] = []
        self._waiting: list[Queued] = []
        self._served: dict[str | None, int] = {}  # owner -> when it last got a slot (a counter)
        self._launches = 0

    def submit(self, run: Queued) -> None:
        """Train ``run`` now if a slot is free, else when its turn comes."""
        with self._lock:
            self._waiting.append(run)
        self._fill()

    def withdraw(self, run: Queued) -> bool:
        """Take a waiting run out of the line; True if it was waiting (it never starts)."""
        with self._lock:
            if run in self._waiting:
                self._waiting.remove(run)
                return True
        return False

    def finished(self, run: Queued) -> None:
        """``run``'s process has ended: its slot goes to the next in line."""
        with self._lock:
            if run in self._running:
                self._running.remove(run)
        self._fill()

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def place(self, run: Queued) -> int | None:
        """1-based place in line of a waiting run (1: next to start), None if it is not waiting."""
        with self._lock:
            order = self._order(list(self._running), list(self._waiting))
        return order.index(run) + 1 if run in order else None

    def wait_estimate_s(self, run: Queued) -> float:
        """Seconds until ``run`` should start, from the runs training now (nan if not known yet).

        Each slot frees when its run ends (its remaining training time at its
        current pace); each run ahead in line takes the first free slot and is
        assumed to last as long as the run it replaces has left (unknown: nan).
        """
        with self._lock:
            running, waiting = list(self._running), list(self._waiting)
            slots = self.slots
        order = self._order(running, waiting)
        if run not in order:
            return 0.0
        free_at = sorted(r.remaining_s() for r in running) + [0.0] * max(slots - len(running), 0)
        free_at = sorted(free_at)[:slots] if free_at else [math.nan]
        for ahead in order[: order.index(run)]:
            first = free_at.pop(0)
            free_at.append(first + (ahead.remaining_s() if math.isfinite(ahead.remaining_s()) else math.nan))
            free_at.sort(key=lambda s: (math.isnan(s), s))
        return free_at[0]

    def _order(self, running: list[Queued], waiting: list[Queued]) -> list[Queued]:
        """The waiting runs in the order they will start (see the module's docstring)."""
        counts: dict[str | None, int] = {}
        for r in running:
            counts[r.owner] = counts.get(r.owner, 0) + 1
        served = dict(self._served)
        order, left, clock = [], list(waiting), self._launches
        while left:
            # min keeps the earliest run among equals
            nxt = min(left, key=lambda r: (counts.get(r.owner, 0), served.get(r.owner, -1)))
            left.remove(nxt)
            order.append(nxt)
            counts[nxt.owner] = counts.get(nxt.owner, 0) + 1
            clock += 1
            served[nxt.owner] = clock
        return order

    def _fill(self) -> None:
        to_launch = []
        with self._lock:
            order = self._order(self._running, self._waiting)
            while order and len(self._running) < self.slots:
                nxt = order.pop(0)
                self._waiting.remove(nxt)
                self._running.append(nxt)
                self._launches += 1
                self._served[nxt.owner] = self._launches
                to_launch.append(nxt)
        for run in to_launch:
            try:
                run.launch()
            except Exception:
                self.finished(run)
                raise


_DEFAULT: RunQueue | None = None
_DEFAULT_LOCK = threading.Lock()


def default_queue() -> RunQueue:
    """The server's one queue (made on first use, with ``max_runs()`` slots)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = RunQueue()
        return _DEFAULT
