"""Settings that decide who can reach the app and what a visitor sees (issue 12 items 4, 15, uploads)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import torch

from digitrec import checkpoints, preprocess
from streamlit_app.widgets import digit_input

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())


def test_make_run_listens_on_this_machine_only():
    # `make -n` prints the commands without running them (the venv stamp is taken as up to date).
    dry = subprocess.run(["make", "-n", "-o", ".venv/.installed", "-o", "data", "run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    (line,) = [l for l in dry.stdout.splitlines() if "streamlit run" in l]
    assert "--server.address=127.0.0.1" in line
    assert CONFIG["server"]["address"] == "127.0.0.1"  # plain `streamlit run` too


def test_visitors_never_see_tracebacks():
    assert CONFIG["client"]["showErrorDetails"] == "none"


def test_the_upload_limit_fits_the_largest_checkpoint_and_no_more():
    limit = CONFIG["server"]["maxUploadSize"] * 2**20  # Streamlit's unit is MiB
    largest = checkpoints.max_checkpoint_bytes()
    assert largest <= limit < largest + 8 * 2**20
    # ... while an image upload gets its own, far lower limit.
    assert digit_input.IMAGE_UPLOAD_MB * 2**20 == preprocess.MAX_FILE_BYTES <= limit / 20


def test_the_largest_checkpoint_is_the_largest_model_the_configuration_allows():
    import pytest

    from digitrec import models
    from digitrec.errors import InvalidConfig

    assert models.FCConfig(hidden=checkpoints.LARGEST_CONFIG.hidden)  # allowed
    for too_big in [(4097,), (16,) * 9]:
        with pytest.raises(InvalidConfig):
            models.FCConfig(hidden=too_big)
    with torch.device("meta"):
        cnn = models.build(models.TinyVGGConfig(channels=256))
    assert 4 * models.count_params(cnn) < checkpoints.max_checkpoint_bytes()
