"""The command line, run in-process through ``main([...])`` on real MNIST (and once as a real process)."""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys

import pytest
import torch
from PIL import Image

from digitrec import checkpoints, cli, data, models, train
from digitrec.inspection import predict_proba
from digitrec.preprocess import load_image, to_mnist


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) -> (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    """One quick real training run: (checkpoint path, exit status, stdout)."""
    path = tmp_path_factory.mktemp("train") / "x.safetensors"
    code, out, _ = run(["train", "--model", "fc", "--epochs", "1", "--limit", "2000",
                        "--batch-size", "32", "--out", str(path)])
    return path, code, out


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, mnist):
    """A real MNIST test digit (a 7) rendered as a 140 x 140 PNG, as a user's file would be."""
    assert int(mnist.test.labels[0]) == 7
    path = tmp_path_factory.mktemp("img") / "seven.png"
    Image.fromarray(mnist.test.images[0].numpy()).resize((140, 140), Image.BILINEAR).save(path)
    return path


def test_help_runs_as_a_real_process():
    result = subprocess.run([sys.executable, "-m", "digitrec", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("data", "train", "evaluate", "predict", "bench"):
        assert re.search(rf"^\s+{command}\s+\w", result.stdout, re.M), command


@pytest.mark.parametrize("command", ["data", "train", "evaluate", "predict"])
def test_each_command_has_help(command):
    code, out, _ = run([command, "--help"])
    assert code == 0
    assert f"usage: python -m digitrec {command}" in out


def test_train_help_documents_the_default_output_folder():
    _, out, _ = run(["train", "--help"])
    assert "runs/MODEL-DATE.safetensors" in " ".join(out.split())


def test_data_reports_the_counts(mnist):
    code, out, _ = run(["data"])
    assert code == 0
    assert "60,000 training digits, 10,000 test digits" in out
    assert str(data.data_dir()) in out


def test_train_writes_a_loadable_checkpoint_and_prints_its_accuracy(trained, mnist):
    path, code, out = trained
    assert code == 0
    ckpt = checkpoints.load(path)
    assert ckpt.config == models.FCConfig()
    assert ckpt.info.epochs == 1 and ckpt.info.seed == 0
    assert ckpt.info.extra["train_digits"] == "2000"
    assert ckpt.info.extra["steps"] == "63"  # ceil(2000 / 32)
    assert ckpt.info.extra["stopped_early"] == "no"

    _, accuracy = train.evaluate(ckpt.model, mnist.test)
    assert ckpt.info.test_accuracy == accuracy
    assert accuracy > 0.5  # 63 steps on real digits learn far more than chance (10 %)
    assert f"test accuracy {accuracy * 100:.2f} % — saved {path}" in out
    assert re.search(r"epoch 1/1: test accuracy \d+\.\d\d%", out)


def test_train_options_override_the_preset(tmp_path, mnist):
    path = tmp_path / "wide.safetensors"
    code, _, err = run(["train", "--model", "fc", "--hidden", "8,4", "--epochs", "1", "--limit", "256",
                        "--optimizer", "sgd", "--lr", "0.05", "--seed", "3", "--out", str(path)])
    assert code == 0, err
    ckpt = checkpoints.load(path)
    assert ckpt.config == models.FCConfig(hidden=(8, 4))
    assert ckpt.info.seed == 3
    assert '"optimizer": "sgd"' in ckpt.info.extra["train_config"]


def test_ctrl_c_stops_after_the_batch_and_still_saves(tmp_path, mnist, monkeypatch):
    """A real SIGINT, raised from inside the real training loop at step 5."""
    real_fit = train.fit

    class CtrlC:
        def on_step_end(self, state):
            if state.step == 5:
                signal.raise_signal(signal.SIGINT)

    def fit_with_ctrl_c(*args, callbacks=(), **kwargs):
        return real_fit(*args, callbacks=[*callbacks, CtrlC()], **kwargs)

    monkeypatch.setattr(train, "fit", fit_with_ctrl_c)
    handler_before = signal.getsignal(signal.SIGINT)
    path = tmp_path / "stopped.safetensors"
    code, out, err = run(["train", "--model", "fc", "--epochs", "2", "--limit", "2000", "--out", str(path)])

    assert code == 0, err
    assert "stopped at step 5 of 32" in out
    info = checkpoints.load(path).info
    assert info.extra["stopped_early"] == "yes" and info.extra["steps"] == "5"
    assert info.epochs == 0  # no epoch was completed
    assert signal.getsignal(signal.SIGINT) is handler_before  # our handler was removed


def test_evaluate_prints_the_same_accuracy_as_train_evaluate(trained, mnist):
    path = trained[0]
    code, out, _ = run(["evaluate", str(path)])
    assert code == 0

    loss, accuracy = train.evaluate(checkpoints.load(path).model, mnist.test)
    correct = round(accuracy * 10_000)
    assert f"test accuracy {accuracy * 100:.2f} % ({correct:,} of 10,000 digits)" in out
    assert float(re.search(r"test loss\s+(\d+\.\d+)", out).group(1)) == pytest.approx(loss, abs=1e-4)

    per_class = [tuple(int(n.replace(",", "")) for n in m) for m in re.findall(r"^\s+\d: .*\(([\d,]+) of ([\d,]+)\)$", out, re.M)]
    assert len(per_class) == 10
    assert sum(c for c, _ in per_class) == correct
    assert [t for _, t in per_class] == torch.bincount(mnist.test.labels, minlength=10).tolist()
    assert "architecture: fcnet" in out and "seed: 0" in out and "train_digits: 2000" in out


def _top3(path, png) -> list[tuple[int, str]]:
    """What predict should print for one model: (digit, percent) of the top 3."""
    x = to_mnist(load_image(png.read_bytes())).reshape(1, 1, 28, 28)
    top = predict_proba(checkpoints.load(path).model, x)[0].topk(3)
    return [(int(d), f"{float(p) * 100:5.1f} %") for p, d in zip(top.values, top.indices)]


def test_predict_prints_each_models_top_three(trained, digit_png, tmp_path, mnist):
    fc_path = trained[0]
    cnn_path = tmp_path / "cnn.safetensors"
    code, _, err = run(["train", "--model", "cnn", "--channels", "4", "--epochs", "1", "--limit", "512",
                        "--out", str(cnn_path)])
    assert code == 0, err

    code, out, err = run(["predict", str(digit_png), "--weights", f"fc={fc_path}", "--weights", f"cnn={cnn_path}"])
    assert code == 0, err
    for name, path in (("FCNet 784-16-16-10", fc_path), ("TinyVGG (4 channels)", cnn_path)):
        line = next(line for line in out.splitlines() if line.strip().startswith(name))
        expected = "   ".join(f"{d}: {p}" for d, p in _top3(path, digit_png))
        assert line.rstrip().endswith(expected), (line, expected)
    fc_best, cnn_best = _top3(fc_path, digit_png)[0][0], _top3(cnn_path, digit_png)[0][0]
    if fc_best == cnn_best:
        assert f"both networks read it as {fc_best}" in out
    else:
        assert "DISAGREE" in out


def _always(digit: int, path) -> None:
    """A hand-made checkpoint whose model answers ``digit`` for every input (bias 100 on that class)."""
    model = models.build(models.FCConfig(), seed=0)
    with torch.no_grad():
        model.output.bias.zero_()
        model.output.bias[digit] = 100.0
    checkpoints.save(model, path, test_accuracy=None, epochs=None, seed=0)


def test_predict_flags_a_disagreement(digit_png, tmp_path):
    _always(3, tmp_path / "three.safetensors")
    _always(5, tmp_path / "five.safetensors")
    code, out, _ = run(["predict", str(digit_png), "--weights", f"fc={tmp_path / 'three.safetensors'}",
                        "--weights", f"cnn={tmp_path / 'five.safetensors'}"])
    assert code == 0
    assert "3: 100.0 %" in out and "5: 100.0 %" in out
    assert "DISAGREE" in out and "reads 3" in out and "reads 5" in out

    code, out, _ = run(["predict", str(digit_png), "--weights", f"fc={tmp_path / 'three.safetensors'}",
                        "--weights", f"cnn={tmp_path / 'three.safetensors'}"])
    assert code == 0
    assert "both networks read it as 3" in out and "DISAGREE" not in out


# --- problems the user can fix: one line, exit 2, no traceback -----------------------------


def test_evaluate_a_missing_file(tmp_path):
    code, _, err = run(["evaluate", str(tmp_path / "nope.safetensors")])
    assert_one_error_line(code, err, "nope.safetensors does not exist")


def test_evaluate_a_file_that_is_not_a_checkpoint(tmp_path, digit_png):
    code, _, err = run(["evaluate", str(digit_png)])
    assert_one_error_line(code, err, "seven.png is not a safetensors file (it is a PNG image)")


def test_predict_a_missing_image(tmp_path, trained):
    code, _, err = run(["predict", str(tmp_path / "nope.png"), "--weights", f"fc={trained[0]}"])
    assert_one_error_line(code, err, "nope.png: No such file or directory")


def test_predict_a_corrupt_image(tmp_path, trained):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    code, _, err = run(["predict", str(bad), "--weights", f"fc={trained[0]}", "--weights", f"cnn={trained[0]}"])
    assert_one_error_line(code, err, "not an image we can read")


def test_predict_with_a_non_checkpoint_as_weights(digit_png, trained):
    code, _, err = run(["predict", str(digit_png), "--weights", f"fc={digit_png}", "--weights", f"cnn={trained[0]}"])
    assert_one_error_line(code, err, "not a safetensors file")


def test_train_setting_out_of_range(tmp_path):
    code, _, err = run(["train", "--model", "fc", "--lr", "-1", "--out", str(tmp_path / "x.safetensors")])
    assert_one_error_line(code, err, "learning rate must be above 0")
    assert not (tmp_path / "x.safetensors").exists()


def test_train_hidden_on_a_cnn(tmp_path):
    code, _, err = run(["train", "--model", "cnn", "--hidden", "16", "--out", str(tmp_path / "x.safetensors")])
    assert_one_error_line(code, err, "--hidden sets the widths of an fc model")


def test_bad_arguments_exit_2_with_usage():
    code, _, err = run(["predict", "x.png", "--weights", "rnn=y"])
    assert code == 2
    assert "expected fc=PATH or cnn=PATH" in err and "Traceback" not in err


# --- hostile input (issue 12 items 12-14, 16, 17) ------------------------------------------


def test_train_refuses_a_batch_that_needs_more_memory_than_a_run_may_use(tmp_path, monkeypatch):
    # 256 channels x 60,000 digits would allocate about 48 GB: the app's check, before any training.
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained before checking memory"))
    out = tmp_path / "x.safetensors"
    code, _, err = run(["train", "--model", "cnn", "--channels", "256", "--batch-size", "60000", "--out", str(out)])
    assert_one_error_line(code, err, "Cannot train: this network with a batch of 60,000 digits", "GiB", "--batch-size")
    assert not out.exists()


def test_train_checks_the_output_path_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained before checking --out"))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = run(["train", "--model", "fc", "--epochs", "1", "--limit", "100",
                        "--out", str(blocker / "x.safetensors")])
    assert_one_error_line(code, err, "Cannot save to --out", "nothing was trained")
    code, _, err = run(["train", "--model", "fc", "--epochs", "1", "--limit", "100", "--out", str(tmp_path)])
    assert_one_error_line(code, err, "is a folder")


def test_a_failed_save_after_training_keeps_the_model_in_a_fallback_file(tmp_path, monkeypatch, mnist):
    real_save = checkpoints.save
    target = tmp_path / "out" / "x.safetensors"

    def full_disk_at_the_target(model, path, **kwargs):
        if str(path) == str(target):
            raise checkpoints.CheckpointError(f"Could not save the checkpoint to {path}: No space left on device.")
        return real_save(model, path, **kwargs)

    monkeypatch.setattr(checkpoints, "save", full_disk_at_the_target)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code, _, err = run(["train", "--model", "fc", "--epochs", "1", "--limit", "500", "--out", str(target)])
    assert code == 2
    (fallback,) = (tmp_path / "tmp").glob("digitrec-fc-*.safetensors")
    assert f"saved to {fallback} instead" in err
    assert checkpoints.load(fallback).info.extra["train_digits"] == "500"


def test_evaluate_prints_metadata_escaped(tmp_path, mnist):
    model = models.build(models.FCConfig(), seed=0)
    forged = "x\ntest accuracy 100.00 % (10,000 of 10,000 digits)\x1b[2J\x1b]0;owned\x07"
    path = checkpoints.save(model, tmp_path / "m.safetensors", test_accuracy=0.1, epochs=1, seed=0,
                            extra={"note": forged, "ke\ny": "v"})
    code, out, _ = run(["evaluate", str(path)])
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out
    assert sum(line.startswith("test accuracy") for line in out.splitlines()) == 1
    assert r"note: x\ntest accuracy 100.00 %" in out and r"\x1b[2J" in out


def test_predict_reads_regular_files_only(tmp_path, trained):
    import os
    import threading

    weights = ["--weights", f"fc={trained[0]}", "--weights", f"cnn={trained[0]}"]
    code, _, err = run(["predict", "/dev/zero", *weights])  # read without limit before
    assert_one_error_line(code, err, "/dev/zero is a device, not a file")

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=run(["predict", str(fifo), *weights])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # it blocked opening the pipe: unblock it, then fail
        with open(fifo, "wb"):
            pass
        worker.join(timeout=30)  # (run() redirects the process's stdout while it runs)
        pytest.fail("predict hung on a named pipe")
    assert_one_error_line(result["r"][0], result["r"][2], "pipe.png is a named pipe, not a file")

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * (11 * 2**20))
    code, _, err = run(["predict", str(big), *weights])
    assert_one_error_line(code, err, "big.png is 11,534,340 bytes, more than an image can be")


def test_evaluate_says_what_a_non_file_is():
    code, _, err = run(["evaluate", "/dev/null"])
    assert_one_error_line(code, err, "/dev/null is a device, not a file")
    assert "folder" not in err


def test_a_cnn_trains_in_bfloat16_where_the_processor_has_it_and_float32_on_request(tmp_path, mnist):
    import torch

    from digitrec.engines.local import device_name, training_device

    device = training_device()  # the GPU where there is one, as the app's runs
    expected = "bfloat16" if train.bfloat16_supported(torch.device(device)) else "float32"
    code, out, err = run(["train", "--model", "cnn", "--channels", "2", "--epochs", "1", "--limit", "64",
                          "--out", str(tmp_path / "mixed.safetensors")])
    assert code == 0, err
    assert f"on the {device_name(device)}, forward passes in {expected}" in out
    code, out, err = run(["train", "--model", "cnn", "--channels", "2", "--epochs", "1", "--limit", "64", "--float32",
                          "--out", str(tmp_path / "plain.safetensors")])
    assert code == 0, err
    assert "forward passes in float32" in out
    assert '"mixed_precision": false' in checkpoints.load(tmp_path / "plain.safetensors").info.extra["train_config"]
