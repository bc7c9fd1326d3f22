"""The Ray engine: with DIGITREC_RAY_ADDRESS set, a run trains as an actor on a real Ray instance
through the same handle as a local worker run; a cluster that cannot be reached, or an actor
that dies, makes the run train on this server's own workers with one sentence for the learner;
without the setting nothing of Ray is imported.

The Ray instance is a private one (``DIGITREC_RAY_ADDRESS=local``: the engine's own
``ray.init(num_cpus=1, include_dashboard=False)``), started once for the module and shut down
in the fixture's finaliser, which checks that none of its processes is left.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from digitrec import checkpoints, config, engines, models, runs
from digitrec.engines.local import WorkerRun
from digitrec.runs import RunStatus
from digitrec.spec import RunSpec
from digitrec.train import TrainConfig
from tests import processes
from tests.helpers import wait_until

START_S = 240.0  # a Ray instance, an actor importing torch, or a worker process, on a machine shared by many
RAY_PROCESS_MARKS = (b"raylet", b"gcs_server", b"ray::", b"default_worker.py", b"runtime_env/agent",
                     b"dashboard/agent")


def _spec(max_steps: int | None = None) -> RunSpec:
    """FCNet 16-16 on the first 3,000 training digits: 47 steps of 64 an epoch."""
    return RunSpec(models.FCConfig(), TrainConfig(epochs=5, batch_size=64, max_steps=max_steps), train_size=3000)


def _descendants() -> dict[int, bytes]:
    """This process's descendants: pid -> command line."""
    return {p.pid: p.cmdline for p in processes.descendants(os.getpid())}


def _ray_processes() -> set[int]:
    return {pid for pid, cmd in _descendants().items() if any(mark in cmd for mark in RAY_PROCESS_MARKS)}


@pytest.fixture(scope="module")
def ray_engine():
    """The engine pointed at a private Ray instance with one CPU; shut down (and checked) afterwards."""
    saved = {k: os.environ.get(k) for k in (config.RAY_ADDRESS_ENV, config.MAX_RUNS_ENV, config.ENGINE_ENV)}
    os.environ[config.RAY_ADDRESS_ENV] = config.RAY_LOCAL
    os.environ[config.MAX_RUNS_ENV] = "1"  # the private instance gets num_cpus=1
    os.environ.pop(config.ENGINE_ENV, None)
    from digitrec.engines import queue, ray_cluster

    server_queue = queue._DEFAULT  # a fallback run may make the server's queue under DIGITREC_MAX_RUNS=1
    seen: set[int] = set()
    yield seen
    ray_cluster.disconnect()
    queue._DEFAULT = server_queue  # later tests get the queue of their own environment
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    assert seen, "no Ray process was ever seen: the check below would prove nothing"
    deadline = time.monotonic() + 20
    while _ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(), f"Ray processes left after shutdown: {_ray_processes()}"
    assert not any(Path(f"/proc/{pid}").exists() and _ray_cmd(pid) for pid in seen)


def _ray_cmd(pid: int) -> bool:
    return any(m in processes.cmdline(pid) for m in RAY_PROCESS_MARKS)


def _settle(run) -> int:
    """The step a paused run rests at (two reads a second apart agree)."""
    wait_until(lambda: run.status is RunStatus.PAUSED, timeout=START_S)
    for _ in range(8):
        first = run.progress().step
        time.sleep(1.0)
        if run.progress().step == first and run.status is RunStatus.PAUSED:
            return first
    raise AssertionError("a paused run kept training")


def test_a_run_trains_on_ray_through_the_same_handle(mnist, ray_engine):
    from digitrec.engines.local import spare_worker
    from digitrec.engines.ray_cluster import RayRun

    spare_worker().close()  # a server on Ray keeps no spare (engines.prepare); a cluster run must not start one
    started = time.monotonic()
    run = engines.make_run(_spec(), mnist, callbacks=[runs.Pace(0.02)], owner="learner")
    assert isinstance(run, RayRun)
    run.start(paused=True)
    wait_until(lambda: run.progress().evals, timeout=START_S)  # the actor's first report: step 0 evaluated
    print(f"\nRay run: first progress {time.monotonic() - started:.1f} s after start (connect + actor)")
    ray_engine.update(_ray_processes())
    assert run.on_cluster and not run.notice
    actor_pid = __import__("ray").get(run._conn.actor.pid.remote())
    assert actor_pid != os.getpid() and actor_pid in ray_engine  # the training happens in the actor's process
    assert _settle(run) == 0

    run.step(5)
    wait_until(lambda: run.progress().step >= 5, timeout=60)
    assert _settle(run) == 5

    run.resume()
    assert run.status is RunStatus.RUNNING  # shown at once, before the actor confirms
    wait_until(lambda: run.progress().step >= 20, timeout=60)
    run.pause()
    paused_at = _settle(run)
    assert 20 <= paused_at < run.plan.steps_per_epoch * 2

    run.step_epoch()  # "+1 epoch": to the end of this epoch, then pause
    end_of_epoch = run.plan.steps_per_epoch * (paused_at // run.plan.steps_per_epoch + 1)
    wait_until(lambda: run.progress().step == end_of_epoch, timeout=60)
    assert _settle(run) == end_of_epoch

    run.stop()
    assert run.join(timeout=120)
    p = run.progress()
    assert p.status is RunStatus.STOPPED and p.step == end_of_epoch and not p.notice
    assert [s.step for s in p.steps] == list(range(1, p.step + 1))  # every step's row came back, once, in order
    assert p.evals[0].step == 0 and p.evals[-1].step == p.step and p.snapshots[-1].step == p.step
    assert all(r.step % run.plan.steps_per_epoch == 0 for r in p.epoch_results)  # all validation digits, per epoch
    assert p.final_test_accuracy is not None and p.final_test_accuracy > 0.5  # learned, on the real test set

    # The weights came back: the checkpoint loads with digitrec.checkpoints and predicts like the model.
    ck = checkpoints.load_bytes(run.checkpoint_bytes())
    assert ck.info.test_accuracy == pytest.approx(p.final_test_accuracy) and ck.info.extra["steps"] == str(p.step)
    model = run.trained_model()
    digits = mnist.test.images[:200].float().div(255).unsqueeze(1)
    with torch.no_grad():
        assert torch.equal(ck.model(digits).argmax(1), model(digits).argmax(1))
    wait_until(lambda: not Path(f"/proc/{actor_pid}").exists() or not _ray_cmd(actor_pid), timeout=30)  # actor gone
    assert spare_worker().pid is None  # its end freed no core of this server's


def test_the_actors_pipe_is_readable_while_a_command_waits():
    # _worker_main sleeps on its pipe and its run's end together (multiprocessing.connection.wait);
    # in an actor the pipe is a _QueueEnd, readable exactly while a command waits in it.
    from multiprocessing.connection import wait

    from digitrec.engines.ray_cluster import _QueueEnd

    end = _QueueEnd()
    assert wait([end], 0) == [] and not end.poll(0)
    for n in range(3):
        end.put(b"command %d" % n)
    assert wait([end], 0) == [end] and end.poll(0)
    assert [end.recv_bytes() for _ in range(2)] == [b"command 0", b"command 1"]
    assert wait([end], 0) == [end]  # one left
    assert end.recv_bytes() == b"command 2"
    assert wait([end], 0) == [] and not end.poll(0)  # none left: the loop sleeps
    end.close()
    end.put(b"too late")  # the run has ended: nobody obeys it, and nothing breaks
    assert not end.poll(0)


def test_an_actor_that_dies_makes_the_run_start_again_here(mnist, ray_engine):
    import ray

    from digitrec.engines import ray_cluster

    run = engines.make_run(_spec(), mnist, callbacks=[runs.Pace(0.02)], owner="learner")
    run.start()
    wait_until(lambda: run.progress().step > 5, timeout=START_S)
    ray_engine.update(_ray_processes())
    assert run.on_cluster
    ray.kill(run._conn.actor)  # as when its node goes down
    wait_until(lambda: run.notice, timeout=60)
    assert "was lost" in run.notice and "started again from the beginning on this server" in run.notice
    assert not run.on_cluster
    wait_until(lambda: run.pid is not None and run.progress().step > 5, timeout=START_S)  # a local worker trains it
    assert run.pid in _descendants() and run.status is RunStatus.RUNNING
    assert run.progress().notice == run.notice  # the page shows it with the run's status
    # Until the cluster is tried again, new runs train here at once, saying why.
    later = engines.make_run(_spec(), mnist)
    assert type(later) is WorkerRun and "could not be reached" in later.notice
    run.close()
    assert run.status is RunStatus.STOPPED
    ray_cluster._down.clear()


def test_an_unreachable_cluster_means_one_sentence_and_a_local_run(mnist, monkeypatch):
    address = f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv(config.RAY_ADDRESS_ENV, address)
    started = time.monotonic()
    run = engines.make_run(_spec(max_steps=30), mnist, owner="learner")
    run.start()
    wait_until(lambda: run.notice, timeout=30)
    assert time.monotonic() - started < 30  # refused at once, not after Ray's minutes of retries
    assert run.notice.startswith(f"The Ray cluster at {address} could not be reached (")
    assert run.notice.endswith("so this run trains on this server instead (it may wait its turn and train more slowly).")
    assert run.notice.count(". ") == 0  # one sentence
    assert not run.on_cluster
    assert run.join(timeout=START_S)
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.step == 30 and p.notice == run.notice
    assert p.final_test_accuracy is not None and p.final_test_accuracy > 0.3  # it trained, here


def test_without_the_setting_nothing_of_ray_is_imported(tmp_path):
    code = (
        "import sys\n"
        "import digitrec.engines as engines\n"
        "from digitrec import models\n"
        "from digitrec.spec import RunSpec\n"
        "from tests.helpers import small_mnist\n"
        "run = engines.make_run(RunSpec(models.FCConfig()), small_mnist())\n"
        "assert engines.engine() == 'local' and type(run).__name__ == 'WorkerRun', run\n"
        "print('ray' in sys.modules, any(m.startswith('ray.') for m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (config.RAY_ADDRESS_ENV, config.ENGINE_ENV)}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_the_engine_comes_from_the_environment_or_the_command_line(monkeypatch):
    monkeypatch.delenv(config.RAY_ADDRESS_ENV, raising=False)
    monkeypatch.delenv(config.ENGINE_ENV, raising=False)
    assert engines.engine() == "local"
    monkeypatch.setenv(config.RAY_ADDRESS_ENV, "ray://gpu-node:10001")
    assert engines.engine() == "ray"
    monkeypatch.setenv(config.ENGINE_ENV, "local")  # said outright, it wins
    assert engines.engine() == "local"
    engines.choose_engine(["--server.port", "8501", "--engine", "ray"])
    assert engines.engine() == "ray"
    engines.choose_engine(["--engine=local"])
    assert engines.engine() == "local"
    engines.choose_engine(["--engine", "typo"])  # not an engine: left as it was
    assert engines.engine() == "local"


def test_the_train_page_shows_the_sentence_with_the_runs_status(mnist, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(config.RAY_ADDRESS_ENV, f"127.0.0.1:{_free_port()}")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "streamlit_app" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("views/train.py")
    at.run()
    at.select_slider(key="train_train_size").set_value(300)
    at.run()
    at.button(key="train_start").click().run()
    run = at.session_state["training_runs"]["train"]
    try:
        wait_until(lambda: run.notice, timeout=30)
        at.run()
        assert not at.exception
        assert run.notice in [w.value for w in at.warning]  # beside the progress bar, the learner reads why
        assert at.get("progress")  # and the page goes on showing the run
    finally:
        run.close()


def _free_port() -> int:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
