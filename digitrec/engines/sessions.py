"""Runs belong to the browser session that started them; a session that ends takes its runs with it.

The app registers every run it starts under its session's id (``SessionRuns.add``).
A janitor thread asks, every second, which sessions are still connected (the
app passes Streamlit's ``Runtime.is_active_session``; the library never imports
streamlit). A session gone for more than ``config.SESSION_GRACE_S`` seconds (a
closed tab, an expired session) has each of its runs closed: stopped, and its
worker process terminated if it does not end within ``config.STOP_GRACE_S``.
The grace lets a page reload reconnect without losing its run.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from digitrec import config


class SessionRuns:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, list] = {}  # session id -> its runs (handles with close())
        self._gone_since: dict[str, float] = {}
        self._janitor: threading.Thread | None = None

    def add(self, session: str, run) -> None:
        with self._lock:
            self._runs.setdefault(session, []).append(run)

    def sessions(self) -> list[str]:
        with self._lock:
            return list(self._runs)

    def runs(self, session: str) -> list:
        with self._lock:
            return list(self._runs.get(session, ()))

    def end(self, session: str) -> None:
        """Close every run of ``session`` now (in parallel: each may wait its grace) and forget them."""
        with self._lock:
            runs = self._runs.pop(session, [])
            self._gone_since.pop(session, None)
        closers = [threading.Thread(target=_close, args=(r,), daemon=True) for r in runs]
        for t in closers:
            t.start()
        for t in closers:
            t.join()

    def sweep(self, is_alive: Callable[[str], bool], grace_s: float = config.SESSION_GRACE_S) -> list[str]:
        """End the sessions that ``is_alive`` has said are gone for ``grace_s`` seconds; returns them."""
        now = time.monotonic()
        ended = []
        for session in self.sessions():
            if is_alive(session):
                self._gone_since.pop(session, None)
                continue
            since = self._gone_since.setdefault(session, now)
            if now - since >= grace_s:
                self.end(session)
                ended.append(session)
        with self._lock:  # forget runs that ended on their own, so the lists do not grow forever
            for session, runs in self._runs.items():
                runs[:] = [r for r in runs if not r.status.ended]
        return ended

    def start_janitor(self, is_alive: Callable[[str], bool], every_s: float = 1.0) -> None:
        """Sweep every ``every_s`` seconds in a daemon thread (once per SessionRuns)."""
        with self._lock:
            if self._janitor is not None:
                return
            self._janitor = threading.Thread(target=self._loop, args=(is_alive, every_s), daemon=True,
                                             name="digitrec-session-janitor")
            self._janitor.start()

    def _loop(self, is_alive: Callable[[str], bool], every_s: float) -> None:
        while True:
            time.sleep(every_s)
            try:
                self.sweep(is_alive)
            except Exception:  # the janitor must outlive one bad sweep
                import traceback

                traceback.print_exc()


def _close(run) -> None:
    close = getattr(run, "close", None)
    if close is not None:
        close()
    else:
        run.stop()
