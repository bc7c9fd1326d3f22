"""Where training runs happen: worker processes on this machine, or a Ray cluster.

``make_run`` gives the handle a page keeps for one run. The default engine is
``local`` (``digitrec.engines.local.WorkerRun``: a spawned worker process per
run, at most K at once through the fair queue of ``digitrec.engines.queue``).
"""

from __future__ import annotations

from typing import Sequence

import torch

from digitrec.data import MNIST
from digitrec.spec import RunSpec
from digitrec.train import Callback


def make_run(spec: RunSpec, data: MNIST, probe: torch.Tensor | None = None, callbacks: Sequence[Callback] = (),
             owner: str | None = None):
    """A run handle (not started) on this server's engine."""
    from digitrec.engines.local import WorkerRun

    return WorkerRun(spec, data, probe=probe, callbacks=callbacks, owner=owner)
