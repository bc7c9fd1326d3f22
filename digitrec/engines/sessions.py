"""Browser sessions end; what they held ends with them: one tracker for the whole server.

A class closes thirty tabs at the end of a lesson. The app tells the tracker
about every session it serves (``track``: with a ``release`` callback that lets
go of the session's own networks, uploads and caches) and every run a session
starts (``add``). A janitor thread asks, every ``config.SESSION_SWEEP_S``
seconds, which sessions still have a browser (the app passes Streamlit's
``Runtime.is_active_session``; the library never imports streamlit). A session
without one for ``grace_s`` seconds has ended: each of its runs is closed
(stopped, and its worker terminated if it does not end within
``config.STOP_GRACE_S``), then its ``release`` is called, once.

The grace is the app's reconnect window, Streamlit's
``server.disconnectedSessionTTL`` (120 s unless set): within it a reload or a
network blip reconnects to the same session and finds its run still training;
after it Streamlit could not reconnect the session anyway.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Callable

from digitrec import config


class SessionTracker:
    """Sessions by id: when each was last seen with a browser, its runs, and how to release it."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = float(grace_s)
        self._lock = threading.Lock()
        self._runs: dict[str, list] = {}  # session id -> its runs (handles with close() or stop())
        self._release: dict[str, Callable[[], None] | None] = {}  # session id -> its release callback
        self._gone_since: dict[str, float] = {}
        self._janitor: threading.Thread | None = None

    # -- what the app tells it --

    def track(self, session: str, release: Callable[[], None] | None = None) -> None:
        """Know ``session`` (called on every page run; the first ``release`` given is kept)."""
        with self._lock:
            if self._release.get(session) is None:
                self._release[session] = release

    def add(self, session: str, run) -> None:
        """``run`` belongs to ``session``: it is closed when the session ends."""
        with self._lock:
            self._runs.setdefault(session, []).append(run)
            self._release.setdefault(session, None)

    # -- reading --

    def sessions(self) -> list[str]:
        with self._lock:
            return list(self._release)

    def runs(self, session: str) -> list:
        with self._lock:
            return list(self._runs.get(session, ()))

    # -- ending --

    def end(self, session: str) -> None:
        """End ``session`` now: close its runs (in parallel: each may wait its grace), then release it."""
        with self._lock:
            runs = self._runs.pop(session, [])
            release = self._release.pop(session, None)
            self._gone_since.pop(session, None)
        closers = [threading.Thread(target=_close, args=(r,), daemon=True, name="digitrec-session-close")
                   for r in runs]
        for t in closers:
            t.start()
        for t in closers:
            t.join()
        if release is not None:
            release()

    def sweep(self, is_alive: Callable[[str], bool], grace_s: float | None = None) -> list[str]:
        """End the sessions ``is_alive`` has called gone for ``grace_s`` seconds (default: the
        tracker's); returns them."""
        grace_s = self.grace_s if grace_s is None else grace_s
        now = time.monotonic()
        ended = []
        for session in self.sessions():
            if is_alive(session):
                with self._lock:
                    self._gone_since.pop(session, None)
                continue
            with self._lock:
                since = self._gone_since.setdefault(session, now)
            if now - since >= grace_s:
                self.end(session)
                ended.append(session)
        with self._lock:  # forget runs that ended on their own, so the lists do not grow forever
            for runs in self._runs.values():
                runs[:] = [r for r in runs if not r.status.ended]
        return ended

    def start_janitor(self, is_alive: Callable[[str], bool],
                      after: Callable[[list[str]], None] | None = None,
                      every_s: float = config.SESSION_SWEEP_S) -> None:
        """Sweep every ``every_s`` seconds in a daemon thread (once per tracker); ``after(ended)``
        is called after a sweep that ended sessions (the app returns freed memory and logs it)."""
        with self._lock:
            if self._janitor is not None and self._janitor.is_alive():
                return
            self._janitor = threading.Thread(target=self._loop, args=(is_alive, after, every_s), daemon=True,
                                             name="digitrec-session-janitor")
            self._janitor.start()

    def _loop(self, is_alive: Callable[[str], bool], after, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            try:
                ended = self.sweep(is_alive)
                if ended and after is not None:
                    after(ended)
            except Exception:  # the janitor must outlive one bad sweep
                traceback.print_exc()


def _close(run) -> None:
    try:
        close = getattr(run, "close", None)
        if close is not None:
            close()
        else:
            run.stop()
    except Exception:  # one broken run must not keep the session's others going
        traceback.print_exc()
