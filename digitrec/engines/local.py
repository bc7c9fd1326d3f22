"""Training runs in worker processes on this machine: the page process only watches.

A ``WorkerRun`` is the handle a browser session keeps. It has the API of
``digitrec.runs.TrainingRun`` (start, pause, resume, step n, +1 epoch, stop,
progress, snapshots, checkpoint bytes, the trained model), but the training
happens in a process of its own, started with ``torch.multiprocessing``'s
*spawn* (``worker_context``: a fresh interpreter, no copied locks or threads of the server):

- inside, the worker runs an ordinary ``TrainingRun`` (the same ``fit`` loop,
  the same ``Recorder``), after setting its own PyTorch thread count, so the
  page process never changes torch's global threads and its pages never wait
  on training for the GIL;
- control goes to the worker over a pipe, one small command per click;
- progress comes back over the same pipe as plain data (``RunProgress`` with
  only the rows and snapshots added since the last report, CPU tensors
  pickled by value) every ``config.REPORT_EVERY_S``; a reader thread in the page
  process stitches them together, so ``progress()`` never blocks;
- the training digits cross once, as shared memory (torch's tensor sharing);
- when the run ends the worker sends its weights (CPU tensors) and exits;
- the server keeps one worker started ahead of time (``SpareWorker``), its
  imports done, so a run's first point comes 0.2 s after Start instead of the
  5-6.5 s a fresh interpreter takes to import torch (2-core AVX2 EPYC); each
  run that takes it starts the next spare behind it, and a page that can start
  runs starts one when it is shown (``engines.prepare``).

Runs wait for a slot in the server's fair queue (``digitrec.engines.queue``)
before a process starts. A worker that dies (killed, out of memory) turns its
run FAILED with a sentence; the page and every other run go on. ``close()``
ends a run and its process within ``config.STOP_GRACE_S`` seconds, whatever
state it is in (a browser session that ends calls it for each of its runs).
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import threading
import time
from dataclasses import replace
from multiprocessing.connection import wait
from typing import Sequence

import torch
import torch.multiprocessing as mp
from torch import nn

from digitrec import config, models
from digitrec.allocator import keep_freed_memory
from digitrec.data import IMAGE_SIZE, MNIST, DigitSet, split_sizes
from digitrec.engines.queue import RunQueue, default_queue
from digitrec.runs import _RUN_IDS, RunProgress, RunStatus, TrainingRun, _units, checkpoint_bytes_of
from digitrec.spec import RunSpec
from digitrec.train import Callback, pixel_order

# The status a command leads to, shown until the worker confirms it (a click shows at once).
_EXPECTED = {"pause": RunStatus.PAUSED, "resume": RunStatus.RUNNING, "step": RunStatus.RUNNING,
             "step_epoch": RunStatus.RUNNING, "stop": RunStatus.STOPPING}


def _dumps(obj) -> bytes:
    # Plain pickle, not the pipe's own: torch would move every small tensor into
    # shared memory and keep the worker's copy alive until read.
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _died_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"it was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"it was killed by signal {-exitcode}"
        if -exitcode == signal.SIGKILL:
            how += ", perhaps because the server ran out of memory"
    else:
        how = f"it exited with code {exitcode}"
    return (f"The training process ended unexpectedly ({how}). The network keeps nothing from this run; "
            "other runs go on. Press Start to train again, with a smaller batch or network if memory was short.")


class WorkerRun:
    """A training run in a worker process; control and watch it from the page (any thread).

    ``spec``, ``data``, ``probe`` and ``callbacks`` are those of ``TrainingRun``
    (callbacks must be picklable: they travel to the worker). ``threads``:
    PyTorch threads of the worker (default ``run_threads()``: ``DIGITREC_RUN_THREADS``, or the
    cores the pages leave shared by the runs at once). ``owner``: who started it (a browser session id),
    for the queue's fairness. ``queue``: the server's queue unless given.
    """

    def __init__(
        self,
        spec: RunSpec,
        data: MNIST,
        probe: torch.Tensor | None = None,
        callbacks: Sequence[Callback] = (),
        threads: int | None = None,
        owner: str | None = None,
        queue: RunQueue | None = None,
    ) -> None:
        self.spec = spec
        self.id = next(_RUN_IDS)
        self.owner = owner
        # The worker's TrainingRun holds the validation digits out of the training set itself, so it gets
        # the whole set (shared memory, not copied) and the plan is counted the way it will count it; this
        # process needs only the counts (the split's 43 MB copy would stay in the page process for good).
        n_train, n_validation = split_sizes(len(data.train))
        self.plan = spec.plan(n_train)
        self._train = data.train
        self.pixel_order = pixel_order(spec.train)  # as the worker's TrainingRun reads its digits
        self._test = data.test
        self._eval_size = min(spec.eval_size, n_validation)  # as eval_subset chooses among the validation digits
        if probe is None:
            probe = data.test.images[0].float() / 255.0
        self.probe = probe.detach().float().reshape(1, 1, IMAGE_SIZE, IMAGE_SIZE).clone()  # (1, 1, 28, 28)
        model = models.build(spec.model, seed=spec.train.seed)
        self.params, self.macs, self._total_units = models.count_params(model), models.count_macs(model), _units(model)
        self._callbacks = tuple(callbacks)
        self.threads = threads or run_threads()
        self._queue = queue or default_queue()

        self._lock = threading.Lock()
        self._phase = "idle"  # idle -> queued -> starting (its worker is being opened) -> launched -> ended
        self._start_paused = False
        self._pending: list[tuple[int, str, int]] = []  # commands given while queued: (seq, name, n)
        self._seq = 0  # commands sent
        self._acked = 0  # the last command the worker has applied
        self._expected = RunStatus.RUNNING
        self._reported = RunStatus.RUNNING  # the worker's own status in its last report
        self._final: RunStatus | None = None
        self._message = ""
        self._last: RunProgress | None = None  # the last report (its rows are only the new ones)
        self._steps, self._evals, self._epoch_results, self._snapshots = [], [], [], []
        self._state_dict: dict[str, torch.Tensor] | None = None
        self._conn = None
        self._process = None
        self._closing = False  # close() was called: its session has ended
        self._ended = threading.Event()
        self._reader: threading.Thread | None = None  # opens the worker, then reads its reports
        # perf_counter seconds when the worker's first evaluation (step 0) and its final report arrived:
        # how long a learner waits for the curve to begin, and the run's wall clock, free of any polling.
        self.ready_at: float | None = None
        self.ended_at: float | None = None
        # One sentence for the learner when the run trains elsewhere than the server meant it to
        # (the Ray cluster could not be reached: digitrec.engines.ray_cluster); shown with its status.
        self.notice = ""

    # -- control (any thread) --

    def start(self, paused: bool = False) -> None:
        """Queue the run; it trains in its own process when a slot is free (paused: wait for step/resume)."""
        with self._lock:
            if self._phase != "idle":
                raise RuntimeError("This run has already been started; make a new run to train again.")
            self._phase = "queued"
            self._start_paused = paused
            self._expected = self._reported = RunStatus.PAUSED if paused else RunStatus.RUNNING
        self._submit()

    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def step(self, n: int = 1) -> None:
        """Run ``n`` more batches, then pause (starts a paused run first if it was idle)."""
        if self._phase == "idle":
            self.start(paused=True)
        self._command("step", int(n))

    def step_epoch(self) -> None:
        """Run to the end of the current epoch (a whole epoch if paused at an epoch's end), then pause."""
        if self._phase == "idle":
            self.start(paused=True)
        self._command("step_epoch")

    def stop(self) -> None:
        """Ask the run to end; a queued run ends at once, a training one after its last evaluation."""
        if self._queue.withdraw(self):
            with self._lock:
                self._phase, self._final = "ended", RunStatus.STOPPED
            self._ended.set()
            return
        self._command("stop")

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the run to end (its process gone, its reader thread too); True if it has (or never started)."""
        if self._phase == "idle":
            return True
        if not self._ended.wait(timeout):
            return False
        self._join_reader()
        return True

    def _join_reader(self) -> None:
        """The reader thread ends just after marking the run ended, and only then lets go of the last report
        it read (a snapshot the size of the network): a session that ends frees its memory by the time
        close() returns, before the server trims its heap (memory freed after the trim stayed: a closed
        tab's 23 MB network, the server 26 MB lower instead of 49, once in a full test run)."""
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(config.STOP_GRACE_S)

    def close(self, grace_s: float = config.STOP_GRACE_S) -> None:
        """End the run and its process now: stop, wait ``grace_s``, then terminate (a session that ends)."""
        with self._lock:
            self._closing = True  # a worker still opening is ended as soon as it opens
        self.stop()
        if self.join(grace_s):
            return
        process = self._process
        if process is not None:
            _end_process(process, grace_s=0)
        if self._ended.wait(2.0):
            self._join_reader()

    def _command(self, name: str, n: int = 0) -> None:
        with self._lock:
            if self._phase in ("idle", "ended"):
                return
            self._seq += 1
            self._expected = _EXPECTED[name]
            message = (self._seq, name, n)
            if self._phase in ("queued", "starting"):
                self._pending.append(message)
                return
            conn = self._conn
        try:
            conn.send_bytes(_dumps(message))
        except (OSError, ValueError):  # the worker has just ended: nothing left to control
            pass

    # -- the queue's side --

    def _submit(self) -> None:
        """Put the started run in line (an engine that must first reach its cluster does so here)."""
        self._queue.submit(self)

    def remaining_s(self) -> float:
        """Training seconds left at the current pace (nan before the first report)."""
        p = self._last
        if p is None or p.step == 0:
            return math.nan
        return p.elapsed_s / p.step * max(self.plan.total_steps - p.step, 0)

    def launch(self) -> None:
        """Start the worker (the queue calls this when the run's turn comes, often on the thread of the
        page whose Start click it was). The worker opens in the run's own thread, which then reads its
        reports: a click never waits for a process to start or for a spare to take the run."""
        with self._lock:
            launched = self._phase == "queued"
            if launched:  # no longer in line: the page shows the run's own status while its worker opens
                self._phase = "starting"
                pending = list(self._pending)
                self._pending.clear()
        if not launched:  # not expected: give the slot back
            self._queue.finished(self)
            return
        try:
            self._reader = threading.Thread(target=self._open_and_read, args=(pending,),
                                            name=f"digitrec-run-{self.id}", daemon=True)
            self._reader.start()
        except RuntimeError as e:  # "can't start new thread"
            self._end_unopened(RunStatus.FAILED, _not_started_message(e))

    def _open_and_read(self, pending: list) -> None:
        if self._expected is RunStatus.STOPPING:  # stopped (or its session closed) before its worker opened
            self._end_unopened(RunStatus.STOPPED)
            return
        try:
            conn, process = self._open_worker(pending)
        except Exception as e:  # no process could start (out of memory, too many processes): say so
            self._end_unopened(RunStatus.FAILED, _not_started_message(e))
            return
        with self._lock:
            closing = self._closing
            if not closing:
                for message in self._pending:  # commands given while it was starting, in order
                    try:
                        conn.send_bytes(_dumps(message))
                    except (OSError, ValueError):  # it died at once: the reader below sees its pipe end
                        break
                self._conn, self._process, self._phase = conn, process, "launched"
            self._pending.clear()
        if closing:  # its session ended while the worker opened: nobody is left to train for
            conn.close()
            _end_process(process, grace_s=0)
            self._end_unopened(RunStatus.STOPPED)
            return
        self._read()

    def _end_unopened(self, status: RunStatus, message: str = "") -> None:
        """End a run whose worker never opened (or was ended as it opened), and give its slot back."""
        with self._lock:
            self._final, self._phase, self._message = status, "ended", message
        self._ended.set()
        spare_worker().run_ended(self.id)
        self._queue.finished(self)

    def _open_worker(self, pending: list) -> tuple:
        """Start the worker running ``_worker_main``; (our end of its pipe, its process).

        Another engine returns objects that behave the same: a connection with
        ``send_bytes``/``recv_bytes`` (EOFError once the worker is gone) and ``close``, and a
        process with ``join``, ``is_alive``, ``terminate``, ``kill``, ``exitcode`` and ``pid``.
        """
        # The device is this server's choice, made now: a spare started before DIGITREC_DEVICE changed
        # would otherwise train where its own copy of the environment says.
        job = (self.spec, self._train, self._test, self.probe, self._callbacks, self.threads, self._start_paused,
               pending, training_device())
        spare_worker().run_opening(self.id)  # before taking the spare: the next one waits for a free core
        taken = spare_worker().take(job)
        if taken is not None:
            return taken
        opened = _spawn(_worker_main, f"digitrec-run-{self.id}", *job)
        spare_worker().refill()  # the next run need not wait as this one did (when a core is free for it)
        return opened

    # -- reading (any thread) --

    @property
    def status(self) -> RunStatus:
        with self._lock:
            if self._final is not None:
                return self._final
            if self._phase == "idle":
                return RunStatus.IDLE
            if self._phase == "queued":
                return RunStatus.STOPPING if self._expected is RunStatus.STOPPING else RunStatus.QUEUED
            return self._expected if self._acked < self._seq else self._reported

    @property
    def pid(self) -> int | None:
        """The worker process's id while it exists (None before its turn)."""
        return self._process.pid if self._process is not None else None

    @property
    def thread_alive(self) -> bool:
        """The worker process is alive (the name matches TrainingRun's)."""
        return self._process is not None and self._process.is_alive()

    def place_in_line(self) -> int | None:
        """1-based place in the server's queue while waiting, else None."""
        return self._queue.place(self) if self._phase == "queued" else None

    def wait_estimate_s(self) -> float:
        """Seconds until this queued run should start (nan if not known yet)."""
        return self._queue.wait_estimate_s(self)

    def progress(self) -> RunProgress:
        """Everything the worker has reported so far, as one consistent copy."""
        status = self.status
        with self._lock:
            last = self._last
            rows = tuple(self._steps), tuple(self._evals), tuple(self._epoch_results), tuple(self._snapshots)
            message = self._message
        if last is None:
            return RunProgress(
                status=status, name=self.spec.name, architecture=self.spec.model.architecture, params=self.params,
                macs=self.macs, plan=self.plan, epochs=self.spec.train.epochs, test_size=len(self._test),
                eval_size=self._eval_size, step=0, epoch=0, samples_seen=0, elapsed_s=0.0, samples_per_s=0.0,
                loss=math.nan, accuracy=math.nan, steps=(), evals=(), epoch_results=(), snapshots=(),
                probe_probs=None, first_layer=None, total_units=self._total_units, message=message,
                final_test_accuracy=None, notice=self.notice,
            )
        return replace(last, status=status, steps=rows[0], evals=rows[1], epoch_results=rows[2], snapshots=rows[3],
                       message=message or last.message, notice=self.notice)

    def trained_model(self) -> nn.Module:
        """The model as the worker left it, once the run has ended (a new copy each call)."""
        with self._lock:
            weights, final = self._state_dict, self._final  # both arrive together in the worker's last report
        if final is None:
            raise RuntimeError("The run has not ended yet: stop it or wait for it to finish.")
        if weights is None:
            raise RuntimeError("This run has no trained weights: its worker ended before sending them.")
        model = models.build(self.spec.model)
        model.load_state_dict(weights)
        model.eval()
        return model

    def checkpoint_bytes(self) -> bytes:
        """The ended run's model as a digitrec safetensors checkpoint (for a download)."""
        return checkpoint_bytes_of(self)

    # -- the run's thread, once its worker is open --

    def _read(self) -> None:
        conn, process = self._conn, self._process
        final, opened, spare_asked = False, time.perf_counter(), False
        try:
            while not final:
                kind, acked, delta, weights = pickle.loads(conn.recv_bytes())
                now = time.perf_counter()
                if not spare_asked and now - opened >= config.SPARE_BESIDE_RUN_AFTER_S:
                    spare_asked = True
                    spare_worker().run_going_on(self.id)
                with self._lock:
                    if self.ready_at is None and delta.evals:
                        self.ready_at = now
                    if kind == "final":
                        self.ended_at = now
                    self._acked = max(self._acked, acked)
                    self._steps.extend(delta.steps)
                    self._evals.extend(delta.evals)
                    self._epoch_results.extend(delta.epoch_results)
                    self._snapshots.extend(delta.snapshots)
                    self._last = delta
                    self._reported = delta.status
                    if kind == "final":
                        final = True
                        self._state_dict = weights
                        self._message = delta.message
                        self._final = delta.status
        except (EOFError, OSError, pickle.UnpicklingError):
            pass  # the worker has gone: below says how
        conn.close()
        # The worker has said everything; give it time to exit, then make sure it is gone,
        # so that an ended run never leaves a process behind.
        _end_process(process, grace_s=config.STOP_GRACE_S)
        with self._lock:
            lost, closing = self._final is None, self._closing
        if lost and not closing and self._recover(process):
            return  # the run trains again elsewhere (its slot in this queue is given back)
        with self._lock:
            if self._final is None and closing:  # close() ended it (its session is gone): stopped, as asked
                self._final = RunStatus.STOPPED
            elif self._final is None:
                self._final = RunStatus.FAILED
                self._message = self._died_message(process)
            self._phase = "ended"
        self._ended.set()
        spare_worker().run_ended(self.id)  # before the next in line opens: it may take the spare this starts
        self._queue.finished(self)

    def _recover(self, process) -> bool:
        """The worker has gone without its last report: can the run train again elsewhere? (Not here.)"""
        return False

    def _died_message(self, process) -> str:
        return _died_message(process.exitcode)


def training_device() -> str:
    """"cuda" when a GPU is present (and not switched off with DIGITREC_DEVICE=cpu), else "cpu".

    Only workers train there: the explorers' tiny models stay on the CPU, where one digit is fastest.
    """
    import os

    if os.environ.get(config.DEVICE_ENV, "").strip().lower() == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    """Where ``training_device`` trains, in words: "GPU (its name)" or "CPU"."""
    return f"GPU ({torch.cuda.get_device_name(0)})" if device == "cuda" else "CPU"


def _end_process(process, grace_s: float) -> None:
    """Make sure a worker is gone: let it exit for ``grace_s``, then terminate it, then kill it."""
    process.join(grace_s)
    if process.is_alive():
        process.terminate()
        process.join(2.0)
    if process.is_alive():
        process.kill()
        process.join(2.0)


def _not_started_message(e: Exception) -> str:
    return (f"The training process could not be started ({type(e).__name__}: {e}), so nothing was trained. "
            "Press Start to try again; if it keeps happening, the server needs attention (memory, processes).")


def _spawn(target, name: str, *args) -> tuple:
    """Start ``target(pipe_end, *args)`` in a spawned process; (our end of its pipe, the process).

    Our copy of the child's end closes at once (the process holds its own), so our end sees EOF
    when the process dies; if it cannot start, our end closes too and the error is raised."""
    ctx = worker_context()
    parent, child = ctx.Pipe(duplex=True)
    process = ctx.Process(target=target, name=name, daemon=True, args=(child, *args))
    try:
        process.start()
    except BaseException:
        parent.close()
        raise
    finally:
        child.close()
    return parent, process


def worker_context():
    """The multiprocessing context workers start from: spawn, a fresh interpreter per run.

    A fork server preloaded with torch started a run in 0.2-0.7 s instead of 2-5 s, but two workers
    forked from it died with a segmentation fault in libtorch while gathering a batch of the shared
    training digits (a class load test and a helper's test run, 2026-12-02); until that is understood,
    every worker is spawned."""
    return mp.get_context("spawn")


class SpareWorker:
    """One worker process started before a run needs it: it imports what a run will (torch, digitrec's
    training, the ``torch._dynamo`` that ``Optimizer.step`` imports on a run's first step), then waits
    for a run on its pipe and becomes that run's worker (``_spare_main``).

    The server starts its first spare when a page that can start runs is first shown
    (``engines.prepare``; a server nobody opens such a page on keeps none), and the next one when
    a core is free for its imports: at once if fewer runs train here than the queue allows at once
    (``queue.max_runs``), else when one of them ends or has trained
    ``config.SPARE_BESIDE_RUN_AFTER_S`` (a long run hardly feels the imports, and the Start after
    it finds a spare). Importing beside runs that use every core the pages leave slowed them: FCNet's three-epoch run, half a second long, trained 7 % slower
    (its training clock, 0.44 against 0.41 s, on 2 cores) beside a spare's three seconds of
    imports. A spare still importing is taken all the same: it is further along than a new
    process. It answers the run it is handed, so one that has died, even in the instant of the
    hand-over, is known and replaced by a fresh worker for that run. ``DIGITREC_SPARE_WORKER=0``
    turns spares off.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: tuple | None = None  # (our end of its pipe, its process)
        self._ready = False  # the spare has said its imports are done
        self._training: set[int] = set()  # ids of the runs whose workers are open (or opening) here

    @staticmethod
    def enabled() -> bool:
        import os

        return os.environ.get(config.SPARE_WORKER_ENV, "1").strip() != "0"

    def take(self, job: tuple) -> tuple | None:
        """(pipe end, process) of the spare, now training ``job`` (``_worker_main``'s arguments after
        its pipe); None when there is no live spare. A new spare starts behind it."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is None:
            return None
        conn, process = spare
        try:
            if not process.is_alive():
                raise EOFError("the spare worker has died")
            conn.send(job)  # torch's pickling: the digits cross as shared memory, as in a new process's arguments
            # Wait (on the run's own thread) for the spare to say the job is its own: at once, or when its
            # imports are done. One killed a moment ago can still look alive, its threads taking a while
            # to go; its pipe then ends here, and the run gets a fresh worker instead of a dead one.
            answer = _READY
            while answer == _READY:  # said before the job came (or as it came), unless wait_ready read it
                if not conn.poll(_SPARE_ANSWER_S):
                    raise EOFError("the spare worker did not answer")
                answer = conn.recv_bytes()
            if answer != _TAKEN:
                raise EOFError("the spare worker did not take the run")
        except BaseException as e:
            conn.close()
            if process.is_alive():  # silent all that time (stuck, not slow), or the job could not be sent
                process.kill()
            process.join(1.0)
            if isinstance(e, (EOFError, OSError, ValueError)):  # gone: the run takes a fresh worker
                return None
            raise  # the job itself cannot cross (it does not pickle): the run says why
        self.refill()
        return conn, process

    def refill(self, beside_runs: bool = False) -> None:
        """Start a spare if there is none, spares are on and a core is free for its imports (fewer runs
        train here than ``queue.max_runs`` allows at once; else the next run's end starts it), or
        ``beside_runs`` says to start it all the same."""
        from digitrec.engines.queue import max_runs

        if not self.enabled():
            return
        with self._lock:
            if self._spare is not None or (len(self._training) >= max_runs() and not beside_runs):
                return
            try:
                self._spare, self._ready = _spawn(_spare_main, "digitrec-spare"), False
            except Exception:  # no process to spare now (memory, process limit): runs spawn their own
                # (never an error for the run's thread that asked: it still has its queue slot to give back)
                pass

    def run_opening(self, run_id: int) -> None:
        """A run's worker is opening here (a spare or a new process): it needs the cores it was given."""
        with self._lock:
            self._training.add(run_id)

    def run_ended(self, run_id: int) -> None:
        """A run has ended: if its worker was here (not on a cluster), its core is free, so a missing
        spare starts now."""
        with self._lock:
            here = run_id in self._training
            self._training.discard(run_id)
        if here:
            self.refill()

    @property
    def runs_here(self) -> int:
        """Runs whose workers are open (or opening) on this server."""
        with self._lock:
            return len(self._training)

    def run_going_on(self, run_id: int) -> None:
        """A run has trained ``config.SPARE_BESIDE_RUN_AFTER_S``: if its worker is here (not on a
        cluster), the next spare starts beside it."""
        with self._lock:
            here = run_id in self._training
        if here:
            self.refill(beside_runs=True)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the spare to finish its imports; True if it has (False: no
        spare, or not yet). For a measurement that must not share the machine with a spare's imports
        (``digitrec.bench_app``). It looks in slices of a tenth of a second, holding the spare's lock
        only while it looks: a run may take the spare meanwhile (then False)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._spare is None or self._ready:
                    return self._ready and self._spare is not None
                conn = self._spare[0]
                try:
                    if conn.poll(min(0.1, max(0.0, deadline - time.monotonic()))):
                        self._ready = conn.recv_bytes() == _READY
                        return self._ready
                except (EOFError, OSError):  # it died: a run will start a fresh worker
                    return False
            if time.monotonic() >= deadline:
                return False

    def close(self) -> None:
        """End the spare (it exits when its pipe closes)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare[0].close()
            spare[1].join(5.0)
            if spare[1].is_alive():
                spare[1].kill()

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._spare is None else self._spare[1].pid


_SPARE = SpareWorker()


def spare_worker() -> SpareWorker:
    """The server's spare worker (one per page process)."""
    return _SPARE


def run_threads() -> int:
    """PyTorch threads of each worker: ``DIGITREC_RUN_THREADS``, else (cores - 1) // K, at least 1.

    K is the queue's runs at once (``queue.max_runs``): the runs share the cores the pages leave.
    """
    import os

    from digitrec.engines.queue import max_runs

    share = max(1, ((os.cpu_count() or 2) - 1) // max_runs())
    try:
        return max(1, int(os.environ.get(config.RUN_THREADS_ENV, share)))
    except ValueError:  # a typo in the environment must not stop the server
        return share


# --- the worker process ----------------------------------------------------------------------------

_FIRST_EVALUATION_POLL_S = 0.02


SPARE_NAME, RUN_NAME = b"digitrec-spare", b"digitrec-run"  # what ps and /proc/PID/comm show for each
_TAKEN = b"taken"  # a spare's answer to the run it is handed (SpareWorker.take)
_READY = b"ready"  # what a spare says once its imports are done (SpareWorker.wait_ready)
# How long a run waits for that answer before it takes a fresh worker instead: a spare still
# importing answers within seconds (about 3 s here, alone), even on a machine loaded many times over.
_SPARE_ANSWER_S = 120.0


def name_process(name: bytes) -> None:
    """Set this process's name as ``ps`` shows it (Linux; elsewhere nothing): a spare is told from a
    run's worker by it, by people and by the tests that count a server's workers."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c")).prctl(15, name[:15], 0, 0, 0)  # 15: PR_SET_NAME
    except (OSError, AttributeError, TypeError):
        pass


def _spare_main(conn) -> None:
    """A spare worker: import what a run needs, then wait for one and train it (``SpareWorker``)."""
    import importlib

    name_process(SPARE_NAME)
    importlib.import_module("torch._dynamo")  # Optimizer.step imports it on a run's first step: 2.5 s here
    importlib.import_module("digitrec.runs")  # the training loop and its recorder
    try:
        importlib.import_module("digitrec.native").load_all()  # the C kernels: built now, not on a run's clock
    except Exception:  # never the spare's end: a run builds (or goes without) a kernel it could not have
        pass
    try:
        conn.send_bytes(_READY)
        job = conn.recv()
        conn.send_bytes(_TAKEN)
    except (EOFError, OSError):  # the server has gone (or closed its spare) before a run came
        return
    _worker_main(conn, *job)


def _worker_main(conn, spec: RunSpec, train: DigitSet, test: DigitSet, probe: torch.Tensor,
                 callbacks: Sequence[Callback], threads: int, paused: bool, pending: list,
                 device: str | None = None) -> None:
    """The worker: train ``spec`` with a TrainingRun on ``device`` (None: where this machine trains, as
    ``training_device`` says here: a Ray actor's node), obey commands, report progress, send the weights."""
    name_process(RUN_NAME)
    torch.set_num_threads(threads)  # this process only: the page process keeps its own
    keep_freed_memory()  # reuse each step's freed activations instead of faulting them in anew (digitrec.allocator)
    sent = [0, 0, 0, 0]  # rows already sent: steps, evals, epoch results, snapshots
    acked = 0

    def report(run: TrainingRun, kind: str = "progress", status: RunStatus | None = None) -> None:
        p = run.progress() if status is None else replace(run.progress(), status=status)
        rows = (p.steps, p.evals, p.epoch_results, p.snapshots)
        delta = replace(p, steps=p.steps[sent[0]:], evals=p.evals[sent[1]:], epoch_results=p.epoch_results[sent[2]:],
                        snapshots=p.snapshots[sent[3]:])
        sent[:] = [len(r) for r in rows]
        weights = None
        if kind == "final":  # always CPU tensors: a checkpoint never holds device memory
            weights = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
        conn.send_bytes(_dumps((kind, acked, delta, weights)))

    def apply(run: TrainingRun, name: str, n: int) -> None:
        if name == "step":
            run.step(n)
        elif name == "step_epoch":
            run.step_epoch()
        else:
            getattr(run, name)()

    # The training thread writes a byte here when the run has ended: the loop below sleeps until a
    # command, a report or that, instead of waking every few milliseconds to look (each look takes
    # the GIL from the training thread: FCNet's steps last a third of a millisecond).
    ended_r, ended_w = os.pipe()
    run = TrainingRun(spec, MNIST(train, test), probe=probe[0, 0], callbacks=callbacks,
                      on_end=lambda: os.write(ended_w, b"."))
    try:
        # Commands sent while this process opened (seconds, importing torch) are acted on first: a stop
        # among them (its session ended, or Stop was pressed) ends the run before it trains or evaluates,
        # and before it takes a GPU. A spare opened long ago gets its commands just after the job, so
        # for it a stop may come a moment later and take the usual way (a step-0 point, then stopped).
        while conn.poll(0):
            pending = [*pending, pickle.loads(conn.recv_bytes())]
        if any(name == "stop" for _, name, _ in pending):
            acked = pending[-1][0]
            report(run, "final", status=RunStatus.STOPPED)
            return
        device = device or training_device()
        if device != "cpu":  # training and evaluation on the GPU; the digits stay in CPU memory
            run.model.to(device)
        run.start(paused=paused)
        for seq, name, n in pending:
            apply(run, name, n)
            acked = seq
        next_report = 0.0
        while run.thread_alive:
            answered = False
            # Its final report (the weights, the test accuracy) leaves as soon as the run has ended.
            ready = wait([conn, ended_r], max(0.0, next_report - time.monotonic()))
            if ended_r in ready:
                break
            if conn in ready:
                seq, name, n = pickle.loads(conn.recv_bytes())
                apply(run, name, n)
                acked, answered = seq, True
                time.sleep(0.005)  # let the training thread act on it, so the report shows the new state
            if answered or time.monotonic() >= next_report:
                report(run)
                # Until the step-0 evaluation has gone, look again soon: the curve's first point shows at once.
                next_report = time.monotonic() + (config.REPORT_EVERY_S if sent[1] else _FIRST_EVALUATION_POLL_S)
        run.join()
        report(run, "final")
    except (EOFError, OSError, BrokenPipeError):
        run.stop()  # the page process has gone: stop training and exit
        run.join(config.STOP_GRACE_S)
    finally:
        conn.close()
        if not run.thread_alive:  # else its on_end may yet write: the two ends go with the process
            os.close(ended_r)
            os.close(ended_w)
