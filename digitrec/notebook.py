"""From a notebook to the app: ``digitrec.show(model)`` opens digitrec on the model you just trained.

It turns the module into a layer specification (``layers.spec_from_module``),
checks that the rebuilt model computes exactly what yours does on real digits,
finds the input normalisation your notebook used (or takes ``normalise=``),
saves a checkpoint in the shown-models folder (``DIGITREC_SHOWN``, default
``runs/shown/``), which the app lists in every network picker as "mine: NAME",
and opens the explorer page on it: in your browser, or, where there is none
(a remote Jupyter, a test; ``DIGITREC_SHOW=print``), by printing the link.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path

import torch
from torch import nn

from digitrec import layers as L
from digitrec.data import REPO_ROOT
from digitrec.errors import DataUnavailable, DigitrecError, ModelImportError

DEFAULT_PORT = 8501
MATCH_TOLERANCE = 1e-4  # |yours - rebuilt| on a logit: float32 sums in another order differ by ~1e-6


def shown_dir() -> Path:
    return Path(os.environ.get("DIGITREC_SHOWN", REPO_ROOT / "runs" / "shown"))


def network_key(name: str) -> str:
    """The app's key (and ``?net=`` value) of a shown model."""
    return "mine-" + name


def _clean_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40]
    if not cleaned:
        raise ModelImportError(f"{name!r} is not a usable model name; use letters, digits, - and _.")
    return cleaned


def show(model: nn.Module, name: str = "my-model", *, normalise: str | None = None, port: int = DEFAULT_PORT,
         open_browser: bool | None = None) -> str:
    """Save ``model`` for the app and open the app on it; returns the page's address.

    normalise: what your notebook fed the model, a key of ``importer.NORMALISATIONS``
    or "totensor" / "mnist" / "half"; None detects it on MNIST test digits.
    open_browser: None opens one unless DIGITREC_SHOW=print (then it only prints the link).
    Raises ModelImportError (one sentence) for a model digitrec cannot rebuild.
    """
    from digitrec import data, importer

    name = _clean_name(name)
    if not isinstance(model, nn.Module):
        raise ModelImportError(f"show() takes a PyTorch model (an nn.Module), not a {type(model).__name__}.")
    norm = importer.INPUT_CHOICES.get(normalise, normalise)
    if norm is not None and norm not in importer.NORMALISATIONS:
        raise ModelImportError(f"normalise must be one of {', '.join(importer.INPUT_CHOICES)}, got {normalise!r}.")
    try:
        spec = L.spec_from_module(model, name=name)
    except DigitrecError as e:
        raise ModelImportError(f"digitrec cannot rebuild this model: {e}") from None
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    try:
        digits = data.load_mnist().test
    except DataUnavailable:
        digits = None
    if digits is None and norm is None:
        norm = importer.INPUT_CHOICES["totensor"]
    result = importer.import_state_dict(state, name, arch=spec.text(), digits=digits, normalisation=norm,
                                        model_name=name)
    _check_same_outputs(model, result.model, digits)
    path = shown_dir() / f"{name}.safetensors"
    importer.save(result, path, source="digitrec.show()")
    page = "cnn" if result.spec.has_conv else "fc"
    url = f"http://localhost:{port}/{page}?net={network_key(name)}"
    print(f"{name}: {result.spec.text()}")
    print(importer.summary(result).split("\n", 1)[1] if "\n" in importer.summary(result) else "")
    mode_print = os.environ.get("DIGITREC_SHOW", "") == "print"
    if open_browser is None:
        open_browser = not mode_print
    if not mode_print:
        _ensure_server(port)
    if open_browser:
        webbrowser.open(url)
    for warning in result.warnings:
        print("warning: " + warning)
    print(f"Open {url}")
    return url


explore = show


def _check_same_outputs(yours: nn.Module, rebuilt: nn.Module, digits) -> None:
    """The rebuilt model must compute what yours does (same layers, same order) on real digits."""
    if digits is not None:
        x = digits.images[:100].float().div(255).unsqueeze(1)  # (100, 1, 28, 28)
    else:
        x = torch.rand(100, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    norm = rebuilt.config
    was_training = yours.training
    yours.eval()
    try:
        with torch.inference_mode():
            device = next(yours.parameters(), torch.zeros(())).device
            mine = yours(((x - norm.mean) / norm.std).to(device)).float().cpu()
            ours = rebuilt(x)
    finally:
        yours.train(was_training)
    if mine.shape != ours.shape or (mine - ours).abs().max() > MATCH_TOLERANCE:
        raise ModelImportError(
            "digitrec rebuilt your model's layers in the order they were created, but the result computes something "
            f"else ({spec_note(rebuilt.config)}): probably forward() uses its layers in another order or calls "
            "functions (like F.relu) that are not layers. Make each step a layer in __init__, in forward order."
        )


def spec_note(spec: L.ModelSpec) -> str:
    return f"layers {spec.text()}"


def _ensure_server(port: int) -> None:
    """Start ``streamlit run`` on ``port`` unless an app already answers there (it picks up the new model)."""
    health = f"http://localhost:{port}/_stcore/health"
    if _answers(health):
        return
    log = shown_dir() / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "streamlit_app" / "app.py"),
         f"--server.port={port}", "--server.headless=true", "--browser.gatherUsageStats=false"],
        cwd=REPO_ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _answers(health):
        time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.read().strip() == b"ok"
    except OSError:
        return False
