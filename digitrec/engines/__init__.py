"""Where training runs happen: worker processes on this machine, or a Ray cluster.

``make_run`` gives the handle a page keeps for one run. The default engine is
``local`` (``digitrec.engines.local.WorkerRun``: a spawned worker process per
run, at most K at once through the fair queue of ``digitrec.engines.queue``).
With ``DIGITREC_RAY_ADDRESS`` set (or ``DIGITREC_ENGINE=ray``, which ``--engine
ray`` on the app or ``scripts/serve`` sets), runs are actors on that Ray cluster
(``digitrec.engines.ray_cluster.RayRun``: the same handle). Only then is Ray
imported; a server whose cluster cannot be reached trains locally and says so.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch

from digitrec import config
from digitrec.data import MNIST
from digitrec.spec import RunSpec
from digitrec.train import Callback


def engine() -> str:
    """This server's engine: ``DIGITREC_ENGINE`` if set, else "ray" when ``DIGITREC_RAY_ADDRESS`` is set, else "local"."""
    chosen = os.environ.get(config.ENGINE_ENV, "").strip().lower()
    if chosen in config.ENGINES:
        return chosen
    return "ray" if os.environ.get(config.RAY_ADDRESS_ENV, "").strip() else "local"


def choose_engine(argv: Sequence[str]) -> None:
    """Take ``--engine local|ray`` from a command line (the app's, after ``--``) into the environment,
    where ``engine()`` and every process the server starts read it. Anything else is left alone."""
    args = list(argv)
    for i, arg in enumerate(args):
        value = arg.split("=", 1)[1] if arg.startswith("--engine=") else (
            args[i + 1] if arg == "--engine" and i + 1 < len(args) else None)
        if value is not None and value.strip().lower() in config.ENGINES:
            os.environ[config.ENGINE_ENV] = value.strip().lower()


def make_run(spec: RunSpec, data: MNIST, probe: torch.Tensor | None = None, callbacks: Sequence[Callback] = (),
             owner: str | None = None):
    """A run handle (not started) on this server's engine."""
    from digitrec.engines.local import WorkerRun

    if engine() == "ray":
        try:
            from digitrec.engines.ray_cluster import make_ray_run
        except ImportError as e:  # the optional requirements are not installed: train here, and say why
            run = WorkerRun(spec, data, probe=probe, callbacks=callbacks, owner=owner)
            run.notice = (f"This server is set to train on a Ray cluster, but Ray is not installed ({e}), so this "
                          "run trains here; install requirements-ray.txt to use the cluster.")
            return run
        return make_ray_run(spec, data, probe=probe, callbacks=callbacks, owner=owner)
    return WorkerRun(spec, data, probe=probe, callbacks=callbacks, owner=owner)


def prepare() -> None:
    """Get the engine ready for a run that a page offers: on the local engine, a spare worker with its imports
    done and its kernels built (``local.SpareWorker``; nothing if one is waiting or spares are off).

    A page that can start runs calls it each time it is shown, so even the first Start on a new server finds a
    worker ready: in ``make bench``, a run that found none had its first point 2.2 s after Start, one that took
    a waiting spare 0.1-0.7 s. Only the server's own process starts one, not a worker or a spare: spawn begins a
    child by running its parent's main script, which may be a page's (tests/test_app_main.py), and at that
    moment the child already has its own name but no parent_process() yet."""
    import multiprocessing

    if multiprocessing.current_process().name == "MainProcess" and engine() == "local":
        from digitrec.engines.local import spare_worker

        spare_worker().refill()
