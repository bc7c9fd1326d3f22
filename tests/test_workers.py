"""engines: a run trains in a real spawned worker process, obeys the page process's controls,
waits its turn in the fair queue, dies alone when its worker is killed, and ends with its session.

Every test here starts real worker processes (spawn: a fresh Python importing torch, a
few seconds each on a loaded machine), so the runs are tiny and the waits generous.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from digitrec import config, data as digits, models, native, train
from digitrec.engines.local import RUN_NAME, SPARE_NAME, WorkerRun, spare_worker
from digitrec.engines.queue import RunQueue, max_runs
from digitrec.engines.sessions import SessionTracker
from digitrec.runs import RunStatus
from digitrec.spec import RunSpec
from digitrec.train import TrainConfig
from tests import processes
from tests.helpers import small_mnist, wait_until
from tests.native_kernels import compiler

SPAWN_S = 180.0  # a spawned worker imports torch before its first step: allow for a machine shared by many sessions


def _long_spec() -> RunSpec:
    """FCNet, one digit per step, far more steps than a test waits for."""
    return RunSpec(models.FCConfig(), TrainConfig(epochs=500, batch_size=1))


def _spawned() -> dict[int, bytes]:
    """This process's spawned children (not multiprocessing's resource tracker): {pid: name as ps shows it}."""
    return {p.pid: p.name for p in processes.children(os.getpid()) if b"spawn_main" in p.cmdline}


def _worker_pids() -> set[int]:
    """This process's training workers: its spawned children, not the spare waiting for the next run
    (read after them: a run that ends starts a spare, which may come between the two reads)."""
    spawned = _spawned()
    spare = spare_worker().pid
    return {pid for pid in spawned if pid != spare}


def _settle(run: WorkerRun) -> int:
    """The step a paused run rests at: once PAUSED shows, the step must stop changing.

    The batch in flight at the click still ends and its report comes up to REPORT_EVERY_S later
    (more on a loaded machine), so two reads 1 s apart must agree within a few tries.
    """
    wait_until(lambda: run.status is RunStatus.PAUSED, timeout=SPAWN_S)
    for _ in range(5):
        first = run.progress().step
        time.sleep(1.0)
        if run.progress().step == first:
            assert run.status is RunStatus.PAUSED
            return first
    raise AssertionError("a paused run kept training")


def test_the_page_process_controls_a_run_in_a_worker_process():
    data = small_mnist()
    digits._SPLITS.clear()
    run = WorkerRun(_long_spec(), data, queue=RunQueue(1))
    # The page process counts the split (split_sizes) but never makes it: a copy of the training digits
    # held here would stay for the server's life (the worker splits them itself).
    assert not digits._SPLITS
    assert run.plan.train_size == len(digits.validation_split(data.train)[0])
    threads_before = __import__("torch").get_num_threads()
    before_start = run.progress().eval_size  # what the page shows before the worker's first report
    run.start(paused=True)
    wait_until(lambda: run.pid is not None)
    assert run.pid != os.getpid() and run.pid in _worker_pids()
    wait_until(lambda: run.progress().evals, timeout=SPAWN_S)  # the worker's first report: step 0 evaluated
    assert _settle(run) == 0
    assert before_start == run.progress().eval_size < len(data.test)  # the validation digits it watches

    run.step(3)
    wait_until(lambda: run.progress().step >= 3)
    assert _settle(run) == 3

    run.resume()
    assert run.status is RunStatus.RUNNING  # shown at once, before the worker confirms
    wait_until(lambda: run.progress().step >= 40)
    run.pause()
    assert run.status is RunStatus.PAUSED
    paused_at = _settle(run)
    assert paused_at >= 40

    per_epoch = run.plan.steps_per_epoch  # one digit a step; a twelfth of the digits are held out for validation
    run.step_epoch()  # to the end of this epoch
    wait_until(lambda: run.progress().step == per_epoch * (paused_at // per_epoch + 1))
    assert _settle(run) == per_epoch * (paused_at // per_epoch + 1)

    run.stop()
    assert run.join(timeout=60)
    assert run.pid not in _worker_pids()  # the process is gone, not left behind
    p = run.progress()
    assert p.status is RunStatus.STOPPED and 0 < p.step < p.total_steps
    assert p.evals[-1].step == p.step and p.snapshots[-1].step == p.step
    every = p.plan.history_every  # every report's rows, stitched in order
    assert [s.step for s in p.steps] == list(range(every, p.step + 1, every))
    # The weights came back: the trained model's accuracy is the one the worker measured.
    model = run.trained_model()
    assert p.final_test_accuracy == pytest.approx(train.evaluate(model, data.test)[1])
    assert models.count_params(model) == p.params
    assert __import__("torch").get_num_threads() == threads_before  # the page process's threads untouched
    with pytest.raises(RuntimeError):
        run.start()


def test_runs_beyond_k_wait_their_turn_and_a_learners_second_run_does_not_jump_the_line():
    queue = RunQueue(1)
    data = small_mnist()
    first = WorkerRun(_long_spec(), data, owner="ann", queue=queue)
    second_of_ann = WorkerRun(_long_spec(), data, owner="ann", queue=queue)
    bob = WorkerRun(_long_spec(), data, owner="bob", queue=queue)
    first.start()
    second_of_ann.start()
    bob.start()  # later than Ann's second run, but Bob has nothing training
    assert first.status is RunStatus.RUNNING and queue.running() == 1
    assert second_of_ann.status is RunStatus.QUEUED and bob.status is RunStatus.QUEUED
    assert bob.place_in_line() == 1 and second_of_ann.place_in_line() == 2
    assert bob.pid is None and second_of_ann.pid is None  # no process before its turn
    wait_until(lambda: first.progress().step > 10, timeout=SPAWN_S)
    assert bob.wait_estimate_s() > 0

    first.stop()
    wait_until(lambda: bob.status is not RunStatus.QUEUED, timeout=SPAWN_S)
    assert first.join(timeout=30)
    wait_until(lambda: bob.pid is not None)
    assert second_of_ann.status is RunStatus.QUEUED and second_of_ann.place_in_line() == 1

    second_of_ann.stop()  # a waiting run that is stopped ends at once, never started
    assert second_of_ann.status is RunStatus.STOPPED and second_of_ann.pid is None
    assert second_of_ann.join(timeout=1)
    bob.close()
    assert bob.status.ended and not bob.thread_alive


def test_a_run_whose_worker_cannot_start_fails_with_a_sentence_and_frees_its_slot():
    queue = RunQueue(1)
    data = small_mnist()
    # A callback a worker cannot be sent (a lambda does not pickle): the process cannot start, for real.
    broken = WorkerRun(_long_spec(), data, queue=queue, callbacks=[lambda *args: None])
    broken.start()  # returns at once: the worker opens on the run's own thread
    assert broken.join(timeout=SPAWN_S)
    p = broken.progress()
    assert p.status is RunStatus.FAILED and broken.pid is None
    assert "could not be started" in p.message and "Press Start" in p.message
    assert queue.running() == 0
    after = WorkerRun(_long_spec(), data, queue=queue)  # the slot was given back
    after.start()
    wait_until(lambda: after.progress().step > 0, timeout=SPAWN_S)
    after.close()
    assert after.status.ended


def test_a_run_stopped_the_moment_it_starts_ends_stopped_and_leaves_no_process():
    before = _worker_pids()
    run = WorkerRun(_long_spec(), small_mnist(), queue=RunQueue(1))
    run.start()
    run.stop()  # its worker may not be open yet: the stop waits for it, or the run never opens one
    assert run.join(timeout=SPAWN_S)
    assert run.status is RunStatus.STOPPED
    wait_until(lambda: _worker_pids() <= before, timeout=30)


def test_a_run_closed_while_its_worker_opens_trains_nothing_and_leaves_no_process(monkeypatch):
    # Without a spare a worker takes seconds to open (it imports torch): a tenth of a second after Start
    # the run's thread is opening one. Its session ends then (close): the worker is ended as soon
    # as it opens, without training a step or evaluating.
    monkeypatch.setenv("DIGITREC_SPARE_WORKER", "0")
    spare_worker().close()
    before = _worker_pids()
    run = WorkerRun(_long_spec(), small_mnist(), queue=RunQueue(1))
    run.start()
    time.sleep(0.1)  # the run's thread is past its first check by now; the worker opens for seconds more
    run.close()
    assert run.join(timeout=SPAWN_S)
    p = run.progress()
    assert p.status is RunStatus.STOPPED and p.step == 0 and not p.evals
    wait_until(lambda: _worker_pids() <= before, timeout=30)


def test_a_run_closed_while_its_worker_cannot_answer_is_ended_and_counts_as_stopped():
    run = WorkerRun(_long_spec(), small_mnist(), queue=RunQueue(1))
    run.start()
    wait_until(lambda: run.progress().step > 0, timeout=SPAWN_S)
    pid = run.pid
    os.kill(pid, signal.SIGSTOP)  # frozen (swapped out, stuck): it cannot stop within the grace
    run.close(grace_s=0.5)
    assert run.join(timeout=15)
    p = run.progress()
    assert p.status is RunStatus.STOPPED and "unexpectedly" not in p.message  # ended as asked, not a failure
    assert pid not in _spawned()


def test_a_killed_worker_fails_its_run_with_a_sentence_and_the_others_go_on():
    queue = RunQueue(2)
    data = small_mnist()
    victim, other = WorkerRun(_long_spec(), data, queue=queue), WorkerRun(_long_spec(), data, queue=queue)
    victim.start()
    other.start()
    wait_until(lambda: victim.progress().step > 5 and other.progress().step > 5, timeout=SPAWN_S)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.join(timeout=15)
    p = victim.progress()
    assert p.status is RunStatus.FAILED
    assert "ended unexpectedly" in p.message and "SIGKILL" in p.message and "Press Start" in p.message
    with pytest.raises(RuntimeError):
        victim.trained_model()  # nothing came back: say so instead of handing out fresh weights
    assert queue.running() == 1  # its slot is free again

    going = other.progress().step
    wait_until(lambda: other.progress().step > going + 20)
    assert other.status is RunStatus.RUNNING
    other.stop()
    assert other.join(timeout=60) and other.status is RunStatus.STOPPED


def test_a_session_that_ends_has_its_runs_stopped_and_its_processes_gone():
    queue = RunQueue(3)
    data = small_mnist()
    before = _worker_pids()
    sessions = SessionTracker(grace_s=60)
    released = []  # the app's release callbacks: each ended session's own networks and uploads
    sessions.track("gone", release=lambda: released.append(("gone", [r.status for r in mine])))
    sessions.track("stays", release=lambda: released.append(("stays", [])))
    mine = [WorkerRun(_long_spec(), data, owner="gone", queue=queue) for _ in range(2)]
    theirs = WorkerRun(_long_spec(), data, owner="stays", queue=queue)
    mine[0].start()
    mine[1].start(paused=True)  # paused runs end too
    theirs.start()
    for run in mine:
        sessions.add("gone", run)
    sessions.add("stays", theirs)
    wait_until(lambda: all(r.progress().evals for r in (*mine, theirs)), timeout=SPAWN_S)
    assert len(_worker_pids() - before) == 3

    alive = {"gone": False, "stays": True}
    assert sessions.sweep(alive.get) == []  # within the grace (60 s here) a reload could still reconnect
    assert released == [] and sessions.sessions() == ["gone", "stays"]
    started = time.monotonic()
    assert sessions.sweep(alive.get, grace_s=0) == ["gone"]
    # "Within a few seconds": each run gets config.STOP_GRACE_S to stop, then it is terminated
    # (15 s leaves room for a machine shared by many sessions).
    wait_until(lambda: len(_worker_pids() - before) == 1, timeout=15)
    assert time.monotonic() - started < 15
    assert all(r.status is RunStatus.STOPPED for r in mine)
    assert theirs.status is RunStatus.RUNNING and theirs.pid in _worker_pids()
    assert sessions.runs("gone") == [] and sessions.runs("stays") == [theirs]
    # Released once, after its runs were closed; the session is forgotten.
    assert released == [("gone", [RunStatus.STOPPED, RunStatus.STOPPED])] and sessions.sessions() == ["stays"]
    assert sessions.sweep(alive.get, grace_s=0) == [] and len(released) == 1

    sessions.end("stays")
    wait_until(lambda: _worker_pids() == before, timeout=10)
    assert theirs.status.ended


def test_max_runs_reads_the_environment_and_keeps_a_core_for_the_pages(monkeypatch):
    monkeypatch.setenv("DIGITREC_MAX_RUNS", "3")
    assert max_runs() == 3
    monkeypatch.setenv("DIGITREC_MAX_RUNS", "zero")  # a typo must not stop the server
    assert max_runs() == max(1, (os.cpu_count() or 2) - 1)
    monkeypatch.delenv("DIGITREC_MAX_RUNS")
    assert max_runs() == max(1, (os.cpu_count() or 2) - 1)


def test_training_goes_to_the_gpu_only_when_one_is_present(monkeypatch):
    import torch

    from digitrec.engines.local import training_device

    assert training_device() == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("DIGITREC_DEVICE", "cpu")
    assert training_device() == "cpu"  # a GPU can be kept free for something else


def test_a_run_trains_where_the_server_says_at_start_even_on_a_spare_that_opened_before(monkeypatch):
    # A spare copied the server's environment when it opened; DIGITREC_DEVICE set after that still
    # decides where the next run trains (on a GPU machine a spare would otherwise train on the GPU).
    monkeypatch.setenv(config.MAX_RUNS_ENV, "64")  # a spare starts whatever else trains now
    spare_worker().refill()
    spare = spare_worker().pid
    assert spare is not None
    monkeypatch.setenv("DIGITREC_DEVICE", "cpu")
    run = WorkerRun(RunSpec(models.FCConfig(), TrainConfig(epochs=1, max_steps=2)), small_mnist(), queue=RunQueue(1))
    run.start()
    assert run.join(timeout=SPAWN_S)
    p = run.progress()
    assert run.pid == spare  # the spare trained it, not a fresh worker started with the new environment
    assert p.status is RunStatus.FINISHED and p.device == "cpu"


def test_the_device_paths_run_on_the_cpu_and_the_race_says_where_it_trained():
    import torch

    from digitrec import race
    from digitrec.runs import TrainingRun

    d = small_mnist(n_train=32, n_test=40)
    run = TrainingRun(RunSpec(models.TinyVGGConfig(), TrainConfig(epochs=1, batch_size=8)), d)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run.model.to(device)  # what a worker does when a GPU is present; on the CPU the same code path
    run.start()
    assert run.join(timeout=SPAWN_S)
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.device == device
    assert p.first_layer.device.type == "cpu" and p.probe_probs.device.type == "cpu"  # the page reads CPU copies
    from digitrec.train import uses_mixed_precision

    precision = ", bfloat16 forward" if uses_mixed_precision(run.model, run.spec.train) else ", float32"
    assert p.mixed_precision == (precision == ", bfloat16 forward")
    assert race.table([race.row_of(p)])["trained on"] == [("GPU (CUDA)" if device == "cuda" else "CPU") + precision]


def test_each_worker_takes_its_share_of_the_cores_the_pages_leave(monkeypatch):
    from digitrec.engines.local import run_threads

    monkeypatch.delenv(config.RUN_THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setenv(config.MAX_RUNS_ENV, "2")
    assert run_threads() == 7  # (16 - 1) // 2: one core stays with the pages
    monkeypatch.delenv(config.MAX_RUNS_ENV)
    assert run_threads() == 1  # K = cores - 1 runs at once: one core each
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run_threads() == 1  # this machine
    monkeypatch.setenv(config.RUN_THREADS_ENV, "3")
    assert run_threads() == 3  # the environment decides when it says
    monkeypatch.setenv(config.RUN_THREADS_ENV, "three")
    assert run_threads() == 1  # a typo falls back to the share


def test_a_run_takes_the_spare_worker_and_a_new_one_starts_behind_it(monkeypatch):
    monkeypatch.setenv(config.MAX_RUNS_ENV, "3")  # two runs leave a core free: the next spare starts at once
    data = small_mnist()
    spare = spare_worker()
    first = WorkerRun(_long_spec(), data, queue=RunQueue(2))
    first.start()
    wait_until(lambda: first.pid is not None and spare.pid is not None, timeout=SPAWN_S)
    waiting = spare.pid
    assert waiting != first.pid and waiting in _spawned()
    wait_until(lambda: _spawned().get(waiting) == SPARE_NAME, timeout=SPAWN_S)  # ps tells it from a run's worker

    second = WorkerRun(_long_spec(), data, queue=RunQueue(2))
    second.start()
    wait_until(lambda: second.pid is not None)
    assert second.pid == waiting  # the spare became this run's worker
    assert spare.pid not in (None, waiting, first.pid)  # and the next spare has started
    wait_until(lambda: second.progress().step >= 5, timeout=SPAWN_S)
    assert _spawned()[second.pid] == RUN_NAME
    for run in (first, second):
        run.stop()
        assert run.join(timeout=60) and run.status is RunStatus.STOPPED

    # A spare killed just before a run comes is not handed it, though its process can still look
    # alive for a moment (its threads take a while to go): the run gets a new worker and trains.
    dead = spare.pid
    os.kill(dead, signal.SIGKILL)
    third = WorkerRun(_long_spec(), data, queue=RunQueue(2))
    third.start()
    wait_until(lambda: third.progress().step >= 5 or third.status.ended, timeout=SPAWN_S)
    assert third.progress().step >= 5, third.progress().message
    assert third.pid != dead and spare.pid not in (None, dead)
    third.stop()
    assert third.join(timeout=60) and third.status is RunStatus.STOPPED


def test_a_spare_imports_only_on_a_core_no_run_needs(monkeypatch):
    # With every run slot training (one here), the next spare waits for a run to end: its seconds of
    # imports would slow the run beside it. The spare that said it was ready is still handed the run.
    monkeypatch.setenv(config.MAX_RUNS_ENV, "1")
    monkeypatch.setattr(config, "SPARE_BESIDE_RUN_AFTER_S", 3600.0)  # however slow this machine is now
    data = small_mnist()
    spare = spare_worker()
    wait_until(lambda: spare.runs_here == 0, timeout=60)  # every earlier test's run has ended
    spare.refill()
    assert spare.wait_ready(SPAWN_S)  # its imports are done: it has said so
    waiting = spare.pid
    run = WorkerRun(_long_spec(), data, queue=RunQueue(1))
    run.start()
    wait_until(lambda: run.progress().step >= 5, timeout=SPAWN_S)
    assert run.pid == waiting  # the ready spare took the run
    for _ in range(3):  # the page shows itself again while the run trains (engines.prepare): still no spare
        spare.refill()
        time.sleep(0.5)
        assert spare.pid is None and SPARE_NAME not in _spawned().values()
    run.stop()
    assert run.join(timeout=60) and run.status is RunStatus.STOPPED
    wait_until(lambda: spare.pid is not None, timeout=SPAWN_S)  # the run's end freed its core
    assert spare.pid != waiting and spare.wait_ready(SPAWN_S)

    # A run that has trained SPARE_BESIDE_RUN_AFTER_S starts the next spare beside it: a long run
    # hardly feels the imports, and the Start after it finds a spare ready.
    taken = spare.pid
    long = WorkerRun(_long_spec(), data, queue=RunQueue(1))
    long.start()
    wait_until(lambda: long.progress().step >= 5, timeout=SPAWN_S)
    assert long.pid == taken and spare.pid is None
    monkeypatch.setattr(config, "SPARE_BESIDE_RUN_AFTER_S", 0.0)  # read at each report from the worker
    wait_until(lambda: spare.pid is not None, timeout=SPAWN_S)
    assert long.status is RunStatus.RUNNING and spare.pid not in (taken, None)
    long.stop()
    assert long.join(timeout=60)


def test_a_spare_worker_builds_and_loads_the_c_kernels_before_a_run_comes(monkeypatch):
    if compiler() is None:
        pytest.skip("no C compiler on this machine: runs use PyTorch's own operations")
    monkeypatch.setenv(config.MAX_RUNS_ENV, "64")  # a spare starts whatever else trains now
    spare = spare_worker()
    spare.refill()
    wait_until(lambda: spare.pid is not None, timeout=SPAWN_S)
    pid = spare.pid

    def kernels_mapped() -> bool:
        time.sleep(0.05)
        try:
            maps = open(f"/proc/{pid}/maps").read()
        except OSError:
            return False
        return all(f"/{name}-" in maps for name in native.KERNELS)

    wait_until(kernels_mapped, timeout=SPAWN_S)  # each kernel's library is in the waiting process's memory
    assert spare.pid == pid  # still waiting: no run has come


def test_no_spare_worker_when_the_server_says_so(monkeypatch):
    monkeypatch.setenv("DIGITREC_SPARE_WORKER", "0")
    spare = spare_worker()
    spare.close()
    run = WorkerRun(_long_spec(), small_mnist(), queue=RunQueue(1))
    run.start()
    wait_until(lambda: run.progress().step >= 1, timeout=SPAWN_S)
    assert spare.pid is None and SPARE_NAME not in _spawned().values()
    run.stop()
    assert run.join(timeout=60)
