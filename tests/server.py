"""The app as a learner's browser meets it: `streamlit run` on a free loopback port, ready when
`/_stcore/health` answers `ok` (never after a fixed sleep). Browser tests and load tests share it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP_SCRIPT = REPO / "streamlit_app" / "app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Return once ``url`` answers its health check; RuntimeError if ``proc`` exits or ``timeout`` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok":
                return
        except OSError:
            time.sleep(0.3)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
    raise RuntimeError(f"{url} did not answer /_stcore/health within {timeout:.0f} s")


def start_streamlit(log: Path, *extra: str, env: dict[str, str] | None = None,
                    timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """`streamlit run` of the app on a free loopback port, its output in ``log``; (process, url) once healthy.

    extra: more `streamlit run` options; env: the server's environment (default: this process's).
    """
    port = free_port()
    with open(log, "w") as out:  # the server writes to its own copy of the file handle
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
             "--server.headless=true", f"--server.port={port}", "--server.address=127.0.0.1",
             "--browser.gatherUsageStats=false", "--server.fileWatcherType=none", *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout)
    except Exception as err:
        stop(proc)
        raise RuntimeError(f"{err} (its output: {log})") from err
    return proc, url


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate the server; kill it if it has not exited within ``timeout`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
