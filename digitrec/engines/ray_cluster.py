"""Training runs as actors on a Ray cluster: one GPU node can serve many classrooms.

Chosen by ``DIGITREC_RAY_ADDRESS`` or ``--engine ray`` (``digitrec.engines.make_run``);
importing this module imports Ray, and nothing else in digitrec does.

- ``RayRun`` is a ``local.WorkerRun`` whose worker is a Ray actor instead of a
  local process: the same handle, the same page-side stitching of progress, the
  same queue rules. Inside the actor runs the very same worker loop
  (``local._worker_main``, in a thread), talking to two in-actor queues in place
  of its pipe; the page's reader fetches what it said every
  ``config.REPORT_EVERY_S`` and sends commands as actor calls.
- The digits reach the cluster once per server and data set: ``ray.put`` of the
  uint8 arrays (55 MB for MNIST), and every actor on a node reads that one
  shared-memory copy. Not a path to the MNIST mirror: the GPU node need not share
  the class server's disk, and a run may train on a set that is not the file.
- The code goes too: the job's ``runtime_env`` ships this server's ``digitrec``
  package, so the nodes need the same Python packages (requirements.txt and
  requirements-ray.txt), not a checkout, and always run the server's version.
- Runs take turns through a ``RunQueue`` of their own with one slot per run the
  cluster can hold (one CPU each, or a ``config.RAY_GPU_SHARE`` of a GPU), so
  learners see their place in line and nobody starves, as on local workers.
- A cluster that cannot be reached (a wrong address, a cluster that is down) and
  an actor that dies or stops answering make the run train on this server's own
  workers instead, with one sentence for the learner (``run.notice``); new runs
  train locally too for ``config.RAY_RETRY_S`` seconds before the cluster is tried
  again. The page keeps running throughout.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time
from typing import Sequence

import ray
import torch

from digitrec import config
from digitrec.data import MNIST, DigitSet
from digitrec.engines.local import WorkerRun, run_threads, _worker_main
from digitrec.engines.queue import RunQueue, default_queue, max_runs
from digitrec.runs import RunStatus
from digitrec.spec import RunSpec
from digitrec.train import Callback

TAKE_WAIT_S = 1.0  # how long one fetch waits in the actor for something to report
PROBE_S = 5.0  # an address's port that does not accept a connection by then is not a cluster's


class Unreachable(Exception):
    """The cluster cannot be used now; str(e) is the sentence for the learner."""


def address() -> str:
    """The cluster this server trains on: ``DIGITREC_RAY_ADDRESS``, else ``config.RAY_ADDRESS``."""
    return os.environ.get(config.RAY_ADDRESS_ENV, "").strip() or config.RAY_ADDRESS


def make_ray_run(spec: RunSpec, data: MNIST, probe: torch.Tensor | None = None, callbacks: Sequence[Callback] = (),
                 owner: str | None = None) -> WorkerRun:
    """A run on the cluster; a local run (with its ``notice``) while the cluster is known to be unreachable."""
    where = address()
    down = _down_sentence(where)
    if down:
        run = WorkerRun(spec, data, probe=probe, callbacks=callbacks, owner=owner)
        run.notice = down
        return run
    return RayRun(spec, data, probe=probe, callbacks=callbacks, owner=owner, address=where)


# --- the connection (one per server process) --------------------------------------------------------


class Cluster:
    """This server's connection to a Ray cluster: its queue, and the digits already sent to it."""

    def __init__(self, where: str) -> None:
        self.address = where
        resources = ray.cluster_resources()
        self.gpus = float(resources.get("GPU", 0.0))
        cpus = float(resources.get("CPU", 0.0))
        slots = int(cpus // run_threads())  # each run takes its worker's threads in CPUs ...
        if self.gpus > 0:  # ... and a share of a GPU when there are GPUs
            slots = min(slots, int(self.gpus / config.RAY_GPU_SHARE))
        self.queue = RunQueue(max(slots // _replicas(), 1))
        self._lock = threading.Lock()
        self._digits: dict[tuple[int, int], tuple[DigitSet, DigitSet, ray.ObjectRef]] = {}

    def digits(self, train: DigitSet, test: DigitSet) -> ray.ObjectRef:
        """The digits in the cluster's object store, put there once per data set (the server keeps one)."""
        key = (id(train.images), id(test.images))
        with self._lock:
            if key not in self._digits:
                if len(self._digits) >= 2:  # a server trains on one data set: forget an old one
                    self._digits.pop(next(iter(self._digits)))
                # uint8 arrays: (N, 28, 28) images, (N,) labels. The sets are kept so that id() stays theirs.
                ref = ray.put((train.images.numpy(), train.labels.numpy(), test.images.numpy(), test.labels.numpy()))
                self._digits[key] = (train, test, ref)
            return self._digits[key][2]

    def start_actor(self, run: "RayRun", pending: list):
        options = dict(num_cpus=run.threads, max_concurrency=4)  # fetches and commands answer while it trains
        if self.gpus > 0:
            options["num_gpus"] = config.RAY_GPU_SHARE
        return _RunActor.options(**options).remote(
            self.digits(run._train, run._test), run.spec, run.probe, run._callbacks, run.threads, run._start_paused,
            pending)


def _replicas() -> int:
    """App processes sharing the cluster (``DIGITREC_REPLICAS``, set by scripts/serve; default 1)."""
    try:
        return max(1, int(os.environ.get(config.REPLICAS_ENV, "1")))
    except ValueError:
        return 1


_lock = threading.Lock()
_left = threading.Event()  # set by disconnect(): the thread that made the connection may end
_cluster: Cluster | None = None
_down: dict[str, tuple[float, str]] = {}  # address -> (monotonic time to try again, the sentence)


def connect(where: str) -> Cluster:
    """The connection to ``where`` (made on first use); Unreachable with the learner's sentence if not possible."""
    global _cluster
    with _lock:
        if _cluster is not None and _cluster.address == where and ray.is_initialized():
            return _cluster
        down = _down_sentence(where)
        if down:
            raise Unreachable(down)
        try:
            _init(where)
            _cluster = Cluster(where)
        except Unreachable as e:
            mark_down(where, str(e))
            raise
        except Exception as e:  # whatever Ray raises: the page must go on
            sentence = _unreachable_sentence(where, _why(e))
            mark_down(where, sentence)
            raise Unreachable(sentence) from e
        return _cluster


def disconnect() -> None:
    """Leave the cluster (a private "local" one stops with its processes); forget every failure."""
    global _cluster
    with _lock:
        _cluster = None
        _down.clear()
        if ray.is_initialized():
            ray.shutdown()
        _left.set()


def mark_down(where: str, sentence: str) -> None:
    """New runs train locally, with ``sentence``, for ``config.RAY_RETRY_S`` seconds."""
    _down[where] = (time.monotonic() + config.RAY_RETRY_S, sentence)


def _down_sentence(where: str) -> str:
    until, sentence = _down.get(where, (0.0, ""))
    return sentence if time.monotonic() < until else ""


def _unreachable_sentence(where: str, why: str) -> str:
    return (f"The Ray cluster at {where} could not be reached ({why}), so this run trains on this server instead "
            "(it may wait its turn and train more slowly).")


def _why(e: BaseException) -> str:
    """A short reason from an exception, to stand in brackets in one sentence: the first sentence of
    its text (Ray's go on with advice for programmers), else its kind."""
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    first = first.split(". ", 1)[0].rstrip(".")[:160]
    return first or type(e).__name__


def _init(where: str) -> None:
    """``ray.init`` for ``where``, refusing quickly what cannot answer (Ray itself retries for minutes)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a class server sends nothing anywhere
    import digitrec

    runtime_env = {"py_modules": [os.path.dirname(digitrec.__file__)]}
    kwargs = dict(namespace="digitrec", runtime_env=runtime_env, logging_level="WARNING")
    if where == config.RAY_LOCAL:  # a private instance in this process's children, as the tests use
        # (Ray's "local": a new instance even where `ray start` made one, or RAY_ADDRESS names one)
        kwargs.update(address="local", num_cpus=max_runs(), include_dashboard=False)
    else:
        _probe(where)
        kwargs.update(address=where)
    if ray.is_initialized():  # another address before, or an attempt given up on that got through since
        ray.shutdown()
    _left.set()  # the thread of that connection may end
    outcome: dict[str, BaseException | None] = {}
    answered = threading.Event()
    _left.clear()

    def attempt() -> None:
        try:
            ray.init(**kwargs)
            outcome["error"] = None
        except BaseException as e:  # handed to the waiting thread
            outcome["error"] = e
            return
        finally:
            answered.set()
        # Ray starts a private instance's processes bound to this thread's life (the kernel's
        # parent-death signal is per thread): it must outlive the connection, not just ray.init.
        _left.wait()

    threading.Thread(target=attempt, name="digitrec-ray-connection", daemon=True).start()
    answered.wait(config.RAY_CONNECT_TIMEOUT_S)
    if "error" not in outcome:
        raise Unreachable(_unreachable_sentence(where, f"no answer within {config.RAY_CONNECT_TIMEOUT_S:.0f} s"))
    if outcome["error"] is not None:
        raise Unreachable(_unreachable_sentence(where, _why(outcome["error"]))) from outcome["error"]


def _probe(where: str) -> None:
    """Connect to the address's port once: a refused or silent port fails in seconds, not minutes."""
    if where == "auto":
        return  # Ray finds the local cluster's address itself, and says at once when there is none
    host_port = where.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise Unreachable(_unreachable_sentence(where, "the address is not host:port or ray://host:port"))
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
    except OSError as e:
        raise Unreachable(_unreachable_sentence(where, e.strerror or type(e).__name__)) from e


# --- the run -----------------------------------------------------------------------------------------


class RayRun(WorkerRun):
    """A run trained by an actor on the Ray cluster at ``address``; the handle of ``WorkerRun``.

    ``notice`` becomes one sentence when the run trains on this server instead."""

    def __init__(self, spec: RunSpec, data: MNIST, probe: torch.Tensor | None = None,
                 callbacks: Sequence[Callback] = (), threads: int | None = None, owner: str | None = None,
                 address: str = config.RAY_ADDRESS) -> None:
        super().__init__(spec, data, probe=probe, callbacks=callbacks, threads=threads, owner=owner)
        self.address = address
        self._cluster: Cluster | None = None  # None: not connected yet, or trains locally

    @property
    def on_cluster(self) -> bool:
        """The run trains (or will) on the cluster, not on this server's workers."""
        return self._cluster is not None

    def _submit(self) -> None:
        # Connecting can take seconds (a cluster that does not answer, up to RAY_CONNECT_TIMEOUT_S):
        # never on the page's thread.
        threading.Thread(target=self._connect_and_submit, name=f"digitrec-run-{self.id}-connect",
                         daemon=True).start()

    def _connect_and_submit(self) -> None:
        try:
            cluster = connect(self.address)
        except Unreachable as e:
            self._train_here(str(e), restart=False)
            return
        with self._lock:
            if self._expected is RunStatus.STOPPING:  # stopped while connecting: it never starts
                self._phase, self._final = "ended", RunStatus.STOPPED
                self._ended.set()
                return
            self._cluster, self._queue = cluster, cluster.queue
        cluster.queue.submit(self)

    def _open_worker(self, pending: list) -> tuple:
        cluster = self._cluster
        if cluster is None:  # fell back: a local worker process
            return super()._open_worker(pending)
        try:
            actor = cluster.start_actor(self, pending)
        except Exception as e:  # the cluster went away since: the reader sees it at once and falls back
            return _Lost(_why(e)), _ActorProcess(None)
        return _ActorConnection(actor), _ActorProcess(actor)

    def _recover(self, process) -> bool:
        """The actor died or went silent: train again, from the start, on this server's workers."""
        if self._cluster is None or process.ended_by_us or self._expected is RunStatus.STOPPING:
            return False
        why = getattr(self._conn, "failure", "") or "it stopped answering"
        mark_down(self.address, _unreachable_sentence(self.address, why))
        self._queue.finished(self)  # the cluster's slot
        self._train_here(f"This run's worker on the Ray cluster at {self.address} was lost ({why}), so it started "
                         "again from the beginning on this server.", restart=True)
        return True

    def _died_message(self, process) -> str:
        if self._cluster is None:
            return super()._died_message(process)
        why = getattr(self._conn, "failure", "") or "it was ended before it sent its network back"
        return (f"This run's worker on the Ray cluster ended unexpectedly ({why}). The network keeps nothing from "
                "this run; press Start to train again.")

    def _train_here(self, sentence: str, restart: bool) -> None:
        """Go on as a local run, in this server's queue, with ``sentence`` for the learner.

        ``restart``: the actor had started (and is gone): begin again from step 0, in the state the
        learner last asked for (paused or running). Otherwise the commands waiting for it still apply."""
        with self._lock:
            self.notice = sentence
            self._cluster, self._queue = None, default_queue()
            if restart:
                self._steps, self._evals, self._epoch_results, self._snapshots = [], [], [], []
                self._last, self._conn, self._process = None, None, None
                self._start_paused = self._expected is RunStatus.PAUSED
                self._reported = RunStatus.PAUSED if self._start_paused else RunStatus.RUNNING
                self._acked = self._seq  # the commands so far are in the state it restarts in
                self._pending.clear()
            stopping = self._expected is RunStatus.STOPPING
            self._phase = "ended" if stopping else "queued"
            if stopping:
                self._final = RunStatus.STOPPED
        if stopping:
            self._ended.set()
            return
        self._queue.submit(self)


# --- the two ends of an actor --------------------------------------------------------------------------


class _QueueEnd:
    """In the actor: what ``_worker_main`` takes for its pipe. Commands come in, reports go out.

    Like a pipe, it has a ``fileno``, readable while a command waits: the worker loop sleeps on it
    and on its run's end together (``multiprocessing.connection.wait``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._in: collections.deque[bytes] = collections.deque()
        self._out: collections.deque[bytes] = collections.deque()
        self._closed = False
        self._waiting_r, self._waiting_w = os.pipe()  # one byte in it per command in _in

    # the worker loop's side (a multiprocessing Connection's methods)
    def fileno(self) -> int:
        return self._waiting_r

    def poll(self, timeout: float = 0.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._in), timeout)

    def recv_bytes(self) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._in))
            os.read(self._waiting_r, 1)
            return self._in.popleft()

    def send_bytes(self, data: bytes) -> None:
        with self._cond:
            self._out.append(data)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if not self._closed:
                os.close(self._waiting_r)
                os.close(self._waiting_w)
            self._closed = True
            self._cond.notify_all()

    # the actor's calls
    def put(self, data: bytes) -> None:
        with self._cond:
            if self._closed:  # the run has ended: nobody is left to obey it
                return
            self._in.append(data)
            os.write(self._waiting_w, b".")
            self._cond.notify_all()

    def take(self, wait_s: float) -> list[bytes] | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._out) or self._closed, wait_s)
            out = list(self._out)
            self._out.clear()
            return out if out or not self._closed else None


@ray.remote
class _RunActor:
    """One run on the cluster: ``local._worker_main`` in a thread, its pipe replaced by a ``_QueueEnd``."""

    def __init__(self, digits: tuple, spec: RunSpec, probe: torch.Tensor, callbacks: Sequence[Callback],
                 threads: int, paused: bool, pending: list) -> None:
        # The object store's arrays are read-only and shared: each actor keeps its own tensors.
        train_images, train_labels, test_images, test_labels = (torch.from_numpy(a.copy()) for a in digits)
        train, test = DigitSet(train_images, train_labels), DigitSet(test_images, test_labels)
        self._end = _QueueEnd()
        threading.Thread(target=_worker_main, name="digitrec-run", daemon=True,
                         args=(self._end, spec, train, test, probe, callbacks, threads, paused, pending)).start()

    def pid(self) -> int:
        return os.getpid()

    def send(self, data: bytes) -> None:
        self._end.put(data)

    def take(self, wait_s: float) -> list[bytes] | None:
        """What the worker has said since the last take (waits up to ``wait_s``); None once it has ended."""
        return self._end.take(wait_s)


class _ActorConnection:
    """On the server: the actor as the reader thread's pipe (EOFError once the actor is gone)."""

    def __init__(self, actor) -> None:
        self.actor = actor
        self.failure = ""  # why the actor could not be read, once it could not
        self._buffer: collections.deque[bytes] = collections.deque()

    def send_bytes(self, data: bytes) -> None:
        self.actor.send.remote(data)  # a dead actor shows at the next fetch

    def recv_bytes(self) -> bytes:
        while not self._buffer:
            try:
                got = ray.get(self.actor.take.remote(TAKE_WAIT_S), timeout=config.RAY_SILENCE_S)
            except ray.exceptions.GetTimeoutError as e:
                self.failure = f"no answer for {config.RAY_SILENCE_S:.0f} s"
                raise EOFError from e
            except Exception as e:  # the actor died, its node went, the connection broke
                self.failure = _why(e)
                raise EOFError from e
            if got is None:
                raise EOFError
            self._buffer.extend(got)
        return self._buffer.popleft()

    def close(self) -> None:
        pass


class _Lost:
    """A connection to an actor that could not be started."""

    def __init__(self, failure: str) -> None:
        self.failure = failure

    def send_bytes(self, data: bytes) -> None:
        pass

    def recv_bytes(self) -> bytes:
        raise EOFError

    def close(self) -> None:
        pass


class _ActorProcess:
    """On the server: the actor as the reader thread's process. ``join`` (the worker has said its last)
    ends the actor; ``terminate``/``kill`` (a run closed before it ended) also note it was on purpose."""

    exitcode = None
    pid = None  # the actor's process is on another machine

    def __init__(self, actor) -> None:
        self.actor = actor
        self.ended_by_us = False
        self._alive = actor is not None

    def join(self, timeout: float | None = None) -> None:
        self._end()

    def is_alive(self) -> bool:
        return self._alive

    def terminate(self) -> None:
        self.ended_by_us = True
        self._end()

    kill = terminate

    def _end(self) -> None:
        if self._alive:
            self._alive = False
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # already gone, or the cluster with it
                pass
