"""The app's entry script and the worker processes spawned from its pages.

multiprocessing's spawn starts a child by re-running the parent's main script under the name
``__mp_main__`` (``runpy.run_path``, as ``multiprocessing.spawn`` does). In a Streamlit server that
script is streamlit_app/app.py, so every training worker, spare and measuring process ran the whole
app (Streamlit, the Home page, the pretrained models) before its own work: the class load test saw
page timing lines from three process ids on one server.
"""

from __future__ import annotations

import subprocess
import sys

from tests.server import APP_SCRIPT, REPO

SHOW_MODULES = (
    "import runpy, sys; runpy.run_path({path!r}, run_name={name!r}); "
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'streamlit_app')))"
)


def _modules_after_running_app_as(name: str) -> str:
    done = subprocess.run([sys.executable, "-c", SHOW_MODULES.format(path=str(APP_SCRIPT), name=name)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_a_spawned_worker_reading_the_app_as_its_main_runs_nothing_of_it():
    assert _modules_after_running_app_as("__mp_main__") == "[]"


def test_the_app_runs_as_streamlits_main_script():
    # The guard must still let Streamlit's own run through (bare mode here: no server, pages do nothing).
    shown = _modules_after_running_app_as("__main__")
    assert "'streamlit'" in shown and "'streamlit_app.state'" in shown
