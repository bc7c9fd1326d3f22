"""config: the one source of presets, training defaults and limits. Importing it (and the
command line's parser) loads no torch, and every reader (the models, TrainConfig, the command
line, the benchmark, the app's widgets, the lessons' facts) gets the same values from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from digitrec import bench, cli, config, lessons, models
from digitrec.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``code`` (from the repository root)."""
    result = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_importing_config_loads_no_torch():
    loaded = _modules_after("import digitrec.config")
    assert "digitrec.config" in loaded  # the probe works: it sees what was imported
    assert not {m for m in loaded if m == "torch" or m.startswith("torch.")}
    # The command line's --help reads its defaults from config, still without torch.
    loaded = _modules_after("import digitrec.cli\ndigitrec.cli.build_parser().format_help()")
    assert "digitrec.cli" in loaded and "torch" not in loaded
    # A module that does need torch shows up as loading it (the check can fail).
    assert "torch" in _modules_after("import digitrec.train")


def test_the_presets_are_the_models_presets():
    assert list(models.PRESETS) == list(config.PRESETS) == ["fc", "fc-wide", "cnn"]
    assert models.PRESETS["fc"] == models.FCConfig() == models.FCConfig(hidden=config.FC_HIDDEN)
    assert models.PRESETS["fc-wide"] == models.FCConfig(hidden=(128, 64))
    assert models.PRESETS["cnn"] == models.TinyVGGConfig() == models.TinyVGGConfig(channels=config.CNN_CHANNELS)
    assert config.PRESETS["fc"].widths_text == "16, 16" and config.PRESETS["cnn"].widths_text == ""


def test_train_config_defaults_and_limits_come_from_config():
    t = TrainConfig()
    assert (t.epochs, t.batch_size, t.lr, t.optimizer, t.momentum, t.schedule, t.seed, t.max_steps) == (
        config.EPOCHS, config.BATCH_SIZE, config.LR, config.OPTIMIZER, config.MOMENTUM, config.SCHEDULE,
        config.SEED, None,
    )
    TrainConfig(epochs=config.MAX_EPOCHS, batch_size=config.BATCH_RANGE[1], lr=config.LR_MAX)  # the edges are allowed


def test_the_command_line_and_the_benchmark_read_the_same_defaults():
    train_args = cli.build_parser().parse_args(["train", "--model", "fc"])
    assert (train_args.epochs, train_args.batch_size, train_args.lr, train_args.optimizer, train_args.schedule,
            train_args.seed) == (config.EPOCHS, config.BATCH_SIZE, config.LR, config.OPTIMIZER, config.SCHEDULE,
                                 config.SEED)
    bench_args = bench.build_parser().parse_args([])
    assert bench_args.models.split(",") == list(config.PRESETS)


def test_the_training_widgets_offer_the_config_presets_and_ranges():
    from streamlit_app.widgets import training

    fc_presets = [p for p in config.PRESETS.values() if p.architecture == "fcnet"]
    assert list(training.FC_PRESETS.items())[:-1] == [(p.label, p.widths_text) for p in fc_presets]
    assert list(training.FC_PRESETS.items())[-1] == ("custom widths", None)


def test_the_lessons_settings_facts_are_the_real_numbers(mnist):
    facts = lessons.settings_facts()
    assert facts["data.train_digits"] == f"{len(mnist.train):,}" == "60,000"
    assert facts["data.test_digits"] == f"{len(mnist.test):,}" == "10,000"
    t = TrainConfig()
    assert (facts["train.batch_size"], facts["train.lr"], facts["train.epochs"]) == (
        str(t.batch_size), f"{t.lr:g}", str(t.epochs))
    assert facts["train.optimizer"] == "Adam" and facts["train.momentum"] == "0.9"
