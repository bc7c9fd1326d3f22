"""The command line: ``python -m digitrec {data,train,evaluate,predict,import,bench}``.

Each subcommand is one small function over the library. A problem the user
can fix (a missing file, a corrupt image, a file that is not a checkpoint, a
setting out of range) prints one line, ``error: <what happened and what to
do>``, on stderr and exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import signal
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

from digitrec import config
from digitrec.errors import DigitrecError, InvalidConfig

EXIT_USAGE = 2  # argparse's own status for bad arguments; ours for fixable problems


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 fixable problem, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `bench` hands all its arguments to digitrec.bench, which has its own --help.
    if argv[:1] == ["bench"]:
        return _run(lambda: cmd_bench(argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2); argparse has printed why
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    return _run(lambda: args.func(args))


def _run(command) -> int:
    try:
        return int(command() or 0)
    except DigitrecError as e:
        _error(str(e))
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        # A file or folder the user named (an image, an output folder); the message says which.
        _error(f"{e.filename}: {e.strerror}. Check the path and its permissions.")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE


def _error(message: str) -> None:
    # One line, whatever the message holds, so scripts can grep for it.
    print("error: " + " ".join(message.split()), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m digitrec",
        description="How neural networks read handwritten digits: fetch MNIST, train, evaluate and "
        "run the two networks (FCNet and TinyVGG) from the command line.",
        epilog="Run `python -m digitrec COMMAND --help` for a command's options. "
        "The app: `streamlit run streamlit_app/app.py` (or `make run`).",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "data",
        help="make sure MNIST is on this machine and say where",
        description="Make sure the four MNIST files are present (from DIGITREC_DATA, an offline "
        "mirror in DIGITREC_MNIST_MIRROR or ../shared/data/mnist, or a download), then print "
        "where they are and how many digits each split holds.",
    )
    p.set_defaults(func=cmd_data)

    p = sub.add_parser(
        "train",
        help="train a network on MNIST and save it as a checkpoint",
        description="Train FCNet or TinyVGG on the 60,000 MNIST training digits, print the test "
        "accuracy after each epoch and save a .safetensors checkpoint. Ctrl-C stops after the "
        "current batch and still saves what was learnt so far (press it twice to abort without "
        "saving).",
        epilog="By default the checkpoint goes to runs/MODEL-DATE.safetensors, so a quick run never "
        "overwrites the committed pretrained weights; pass --out weights/fc.safetensors (or "
        "cnn) on purpose to replace them (`make weights` does).",
    )
    p.add_argument("--model", required=True, choices=list(config.PRESETS),
                   help="; ".join(f"{name}: {preset.label}" for name, preset in config.PRESETS.items()))
    p.add_argument("--hidden", type=_widths, default=None, metavar="W1,W2,...",
                   help="hidden layer widths of an fc model, overriding the preset (e.g. 32,16; none for no hidden layer)")
    p.add_argument("--channels", type=int, default=None, metavar="C",
                   help=f"feature maps per conv layer of the cnn model, overriding the preset's {config.CNN_CHANNELS}")
    p.add_argument("--epochs", type=int, default=config.EPOCHS, help="passes over the training digits (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="digits per update (default: %(default)s)")
    p.add_argument("--lr", type=float, default=config.LR,
                   help="learning rate (default: %(default)s, right for Adam; SGD needs about 0.05)")
    p.add_argument("--optimizer", choices=config.OPTIMIZERS, default=config.OPTIMIZER,
                   help="sgd: plain SGD; momentum: SGD with momentum; adam (default: %(default)s)")
    p.add_argument("--augment-shift", type=int, default=0, metavar="PX",
                   help=f"data augmentation: move each training digit by up to PX pixels (0-{config.MAX_AUGMENT_SHIFT}; default: 0)")
    p.add_argument("--augment-rotation", type=float, default=0.0, metavar="DEG",
                   help=f"data augmentation: turn each training digit by up to DEG degrees (0-{config.MAX_AUGMENT_ROTATION:g}; default: 0)")
    p.add_argument("--schedule", choices=config.SCHEDULES, default=config.SCHEDULE,
                   help="learning-rate schedule; cosine decays it to 0 by the last step, onecycle warms up to it first (default: %(default)s)")
    p.add_argument("--float32", action="store_true",
                   help="compute every forward pass in float32; by default a cnn's runs in bfloat16 where the "
                   "processor has it (about 2x faster, same accuracy; the committed weights were made in float32)")
    p.add_argument("--seed", type=int, default=config.SEED,
                   help="fixes the initial weights and the batch order (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="train on only the first N training digits, for quick runs (the test "
                   "accuracy is still measured on all 10,000 test digits)")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="where to save the checkpoint (default: runs/MODEL-DATE.safetensors)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="measure a checkpoint on the 10,000 MNIST test digits",
        description="Load a checkpoint, measure its accuracy and loss on the 10,000 MNIST test "
        "digits, per digit class too, and print what its metadata says.",
    )
    p.add_argument("path", type=Path, metavar="PATH", help="a .safetensors checkpoint")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="read a digit from an image file with both networks",
        description="Read an image of one handwritten digit (PNG, JPEG, ...; dark on light or light "
        "on dark), turn it into an MNIST-style 28x28 digit and print both networks' top 3 "
        "guesses, flagging when they disagree.",
        epilog="Without --weights the pretrained checkpoints in weights/ are used.",
    )
    p.add_argument("image", type=Path, metavar="IMAGE", help="the image file")
    p.add_argument("--weights", action="append", type=_weights_arg, default=[], metavar="KEY=PATH",
                   help="use this checkpoint instead of a pretrained one; KEY is fc or cnn "
                   "(repeat for both)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "import",
        help="import a model you trained in a notebook (its saved state dict)",
        description="Read a state dict saved with torch.save(model.state_dict(), 'model.pth') (or a "
        ".safetensors file), work out its layers from the tensors' names and shapes (trying the "
        "activations, pooling, padding and input normalisations that fit, on real test digits), "
        "measure its test accuracy and save it as a digitrec checkpoint every page can open.",
        epilog="The .pth file is opened only with PyTorch's restricted loader (weights_only=True); "
        "a whole pickled model is refused: save model.state_dict() instead. Example --arch: "
        "\"conv3x3(10,p=1) relu conv3x3(10,p=1) relu maxpool2 flatten linear(10)\".",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the .pth/.pt or .safetensors file")
    p.add_argument("--arch", default=None, metavar="SPEC",
                   help="the layers in one line, when they cannot be inferred (see the example below)")
    p.add_argument("--input", choices=["auto", "totensor", "mnist", "half"], default="auto",
                   help="the notebook's input transform: totensor = ToTensor() only, mnist = Normalize((0.1307,), "
                   "(0.3081,)), half = Normalize((0.5,), (0.5,)); auto: detected on test digits (default)")
    p.add_argument("--name", default=None, help="the model's name in the app (default: the file name)")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="where to save the checkpoint (default: runs/mine-NAME.safetensors)")
    p.set_defaults(func=cmd_import)

    # Listed here for --help; main() dispatches it before parsing (see cmd_bench).
    sub.add_parser(
        "bench",
        help="time the training loop and both networks (prints a table)",
        description="Benchmark: see `python -m digitrec bench --help`.",
        add_help=False,
    )
    return parser


def _widths(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":  # no hidden layer: softmax regression
        return ()
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, like 16,16 (got {text!r})")
    return widths


def _weights_arg(text: str) -> tuple[str, Path]:
    key, sep, path = text.partition("=")
    if not sep or key not in ("fc", "cnn") or not path:
        raise argparse.ArgumentTypeError(f"expected fc=PATH or cnn=PATH (got {text!r})")
    return key, Path(path)


# --- data ----------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from digitrec import data

    root = data.ensure_mnist()
    mnist = data.load_mnist(root)
    print(f"MNIST is in {root / 'MNIST' / 'raw'}")
    print(f"  {len(mnist.train):,} training digits, {len(mnist.test):,} test digits")
    return 0


# --- train ---------------------------------------------------------------------------------


class _ProgressBar:
    """A training callback that drives a tqdm bar over all steps and prints each epoch."""

    def __init__(self, total_steps: int) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, mininterval=0.2)

    def on_step_end(self, state) -> None:
        self.bar.set_description(f"epoch {state.epoch}/{state.epochs}", refresh=False)
        self.bar.set_postfix(
            loss=f"{state.loss:.3f}", acc=f"{state.accuracy:.1%}",
            samples_per_s=f"{state.samples_per_s:,.0f}", refresh=False,
        )
        self.bar.update(1)

    def on_epoch_end(self, state) -> None:
        if state.test_accuracy is not None:
            self._tqdm.write(
                f"epoch {state.epoch}/{state.epochs}: test accuracy {state.test_accuracy:.2%}, "
                f"test loss {state.test_loss:.4f} ({state.elapsed_s:.1f} s)"
            )

    def close(self) -> None:
        self.bar.close()


def cmd_train(args: argparse.Namespace) -> int:
    from digitrec import checkpoints, data, models, train
    from digitrec.allocator import keep_freed_memory
    from digitrec.engines.local import device_name, training_device

    keep_freed_memory()  # this process trains: reuse each step's freed activations (digitrec.allocator)

    model_config = models.PRESETS[args.model]
    if args.hidden is not None:
        if not isinstance(model_config, models.FCConfig):
            raise InvalidConfig("--hidden sets the widths of an fc model; for --model cnn use --channels.")
        model_config = replace(model_config, hidden=args.hidden)
    if args.channels is not None:
        if not isinstance(model_config, models.TinyVGGConfig):
            raise InvalidConfig("--channels sets the feature maps of the cnn model; for fc models use --hidden.")
        model_config = replace(model_config, channels=args.channels)
    train_config = train.TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        optimizer=args.optimizer, seed=args.seed, schedule=args.schedule,
        augment_shift=args.augment_shift, augment_rotation=args.augment_rotation,
        mixed_precision=config.MIXED_PRECISION and not args.float32,
    )
    if args.limit is not None and args.limit < 1:
        raise InvalidConfig(f"--limit must be at least 1 (got {args.limit}).")
    _check_training_memory(model_config, train_config.batch_size, train_config.optimizer)
    out = args.out or Path("runs") / f"{args.model}-{_dt.datetime.now():%Y%m%d-%H%M%S}.safetensors"
    _check_writable(out)  # before training: a bad path must not cost the trained model

    mnist = data.load_mnist()
    train_set = mnist.train.subset(args.limit) if args.limit else mnist.train
    device = training_device()  # the GPU when there is one (DIGITREC_DEVICE=cpu keeps it off), as the app's runs
    model = models.build(model_config, seed=args.seed).to(device)
    precision = "bfloat16" if train.uses_mixed_precision(model, train_config) else "float32"
    print(f"training {models.display_name(model_config)} ({models.count_params(model):,} parameters) on "
          f"{len(train_set):,} digits for {train_config.epochs} epoch(s) on the {device_name(device)}, "
          f"forward passes in {precision}")

    control = train.TrainControl()
    total_steps = train_config.epochs * math.ceil(len(train_set) / train_config.batch_size)
    progress = _ProgressBar(total_steps)
    with _stop_on_ctrl_c(control):
        try:
            state = train.fit(model, train_set, train_config, callbacks=[progress], control=control,
                              test=mnist.test)
        finally:
            progress.close()

    if state.stopped:
        print(f"stopped at step {state.step} of {state.total_steps}; saving the model as it is")
    if state.test_accuracy is None or state.stopped:  # the last epoch's score is not this model's
        state.test_loss, state.test_accuracy = train.evaluate(model, mnist.test)
    epochs_done = state.epoch if not state.stopped else state.epoch - 1
    extra = {
        "train_config": json.dumps(asdict(train_config), sort_keys=True),
        "train_digits": str(len(train_set)),
        "steps": str(state.step),
        "stopped_early": "yes" if state.stopped else "no",
        "test_loss": repr(state.test_loss),
    }
    save = dict(test_accuracy=state.test_accuracy, epochs=epochs_done, seed=args.seed, extra=extra)
    try:
        path = checkpoints.save(model, out, **save)
    except DigitrecError as e:  # the disk filled up, the folder vanished: keep the model somewhere
        fallback = Path(tempfile.gettempdir()) / f"digitrec-{args.model}-{_dt.datetime.now():%Y%m%d-%H%M%S}.safetensors"
        checkpoints.save(model, fallback, **save)
        _error(f"{e} The trained model was saved to {fallback} instead; move it where you want it.")
        return EXIT_USAGE
    print(f"test accuracy {state.test_accuracy * 100:.2f} % — saved {path}")
    return 0


def _check_training_memory(model_config, batch_size: int, optimizer: str) -> None:
    """The app's memory check: refuse a network and batch that need more memory than a run may use."""
    from digitrec.config import MEMORY_BUDGET_BYTES
    from digitrec.spec import training_memory_bytes

    need = training_memory_bytes(model_config, batch_size, optimizer)
    if need > MEMORY_BUDGET_BYTES:
        raise InvalidConfig(
            f"Cannot train: this network with a batch of {batch_size:,} digits needs about {need / 2**30:.1f} GiB "
            f"of memory to train (the limit is {MEMORY_BUDGET_BYTES / 2**30:.0f} GiB); use a smaller --batch-size "
            "or a smaller network."
        )


def _check_writable(out: Path) -> None:
    """Refuse an --out the checkpoint could not be written to, before any training."""
    if out.is_dir():
        raise DigitrecError(f"--out {out} is a folder; give a file path such as {out / 'model.safetensors'}.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise DigitrecError(
            f"Cannot save to --out {out}: {e.strerror or e}. Choose a folder you can write to; nothing was trained."
        ) from None


class _stop_on_ctrl_c:
    """While active, the first Ctrl-C asks the loop to stop after its batch; a second one aborts.

    Stopping between batches (through TrainControl) rather than wherever the
    KeyboardInterrupt lands means the optimizer never stops half way through an
    update, so the weights that get saved are ones the model really had.
    """

    def __init__(self, control) -> None:
        self.control = control
        self.previous = None

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():  # signals only work there
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.control.stopped:
            raise KeyboardInterrupt
        print("\nstopping after this batch (Ctrl-C again to abort without saving)", file=sys.stderr)
        self.control.stop()

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# --- evaluate ------------------------------------------------------------------------------


def cmd_evaluate(args: argparse.Namespace) -> int:
    from digitrec import checkpoints, data

    ckpt = checkpoints.load(args.path)
    mnist = data.load_mnist()
    result = evaluate_report(ckpt.model, mnist.test)
    info = ckpt.info

    print(f"{_printable(str(args.path))}: {info.name}, {info.params:,} parameters")
    print(f"test accuracy {result['accuracy'] * 100:.2f} % ({result['correct']:,} of {result['total']:,} digits)")
    print(f"test loss     {result['loss']:.4f} (mean cross-entropy)")
    print("per digit:")
    for digit, (correct, total) in enumerate(result["per_class"]):
        print(f"  {digit}: {correct / max(total, 1) * 100:6.2f} %  ({correct:,} of {total:,})")
    print("metadata:")
    stored = "unknown" if info.test_accuracy is None else f"{info.test_accuracy * 100:.2f} %"
    rows = [
        ("architecture", info.architecture),
        ("config", json.dumps(_config_dict(ckpt.config))),
        ("test accuracy when saved", stored),
        ("epochs", info.epochs), ("seed", info.seed), ("date", info.date),
        ("digitrec version", info.digitrec_version),
        *sorted(info.extra.items()),
    ]
    for key, value in rows:  # metadata is whatever the file says: escaped, one line each
        print(f"  {_printable(str(key))}: {'unknown' if value is None else _printable(str(value))}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from digitrec import data, importer
    from digitrec.errors import DataUnavailable

    try:
        digits = data.load_mnist().test
    except DataUnavailable as e:
        digits = None
        print(f"note: {e} Without MNIST the layers must be unambiguous or given with --arch.", file=sys.stderr)
    name = args.name or args.file.stem
    normalisation = None if args.input == "auto" else importer.INPUT_CHOICES[args.input]
    if digits is None and normalisation is None:
        normalisation = importer.INPUT_CHOICES["totensor"]
    result = importer.import_file(args.file, arch=args.arch, digits=digits, normalisation=normalisation,
                                  model_name=name)
    out = args.out or Path("runs") / f"mine-{name}.safetensors"
    importer.save(result, out, source=args.file.name)
    print(importer.summary(result))
    for warning in result.warnings:
        print("warning: " + " ".join(warning.split()), file=sys.stderr)
    print(f"saved {out} (open it in the app: Train a network → Load a network you trained and downloaded before)")
    return 0


def _printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``): a checkpoint's metadata can
    neither drive the terminal nor forge a line of output such as a "test accuracy"."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _config_dict(config) -> dict:
    from digitrec import models

    return models.config_to_dict(config)


def evaluate_report(model, digits, batch_size: int = 1000) -> dict:
    """Accuracy, mean cross-entropy and per-class (correct, total) of ``model`` on ``digits``.

    One pass over the digits with a progress bar. Accuracy is the same count as
    ``train.evaluate``'s; the loss agrees to float rounding (the batches differ).
    """
    import torch
    from torch import nn
    from tqdm import tqdm

    from digitrec.data import NUM_CLASSES, to_input
    from digitrec.inspection import eval_mode

    total_loss, n = 0.0, len(digits)
    correct = torch.zeros(NUM_CLASSES, dtype=torch.long)
    counts = torch.bincount(digits.labels, minlength=NUM_CLASSES)
    with eval_mode(model), torch.inference_mode():
        for start in tqdm(range(0, n, batch_size), desc="evaluating", unit="batch", leave=False):
            x = to_input(digits.images[start : start + batch_size])  # (B, 1, 28, 28)
            y = digits.labels[start : start + batch_size]  # (B,)
            logits = model(x)  # (B, 10)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            hits = logits.argmax(dim=1) == y  # (B,)
            correct += torch.bincount(y[hits], minlength=NUM_CLASSES)
    right = int(correct.sum())
    return {
        "accuracy": right / max(n, 1),
        "loss": total_loss / max(n, 1),
        "correct": right,
        "total": n,
        "per_class": [(int(c), int(t)) for c, t in zip(correct, counts)],
    }


# --- predict -------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from digitrec import checkpoints
    from digitrec.inspection import predict_proba
    from digitrec.errors import BadImage
    from digitrec.files import read_regular_file
    from digitrec.preprocess import MAX_FILE_BYTES, load_image, to_mnist  # lazily: pulls in PIL

    # The image first: a wrong image path is the likelier mistake, and the cheaper check.
    # A regular file only, of bounded size: never /dev/zero, never a pipe that blocks.
    image = load_image(read_regular_file(args.image, MAX_FILE_BYTES, "an image", BadImage))
    digit = to_mnist(image)  # (28, 28) float in [0, 1]
    chosen = dict(args.weights)  # a later --weights for the same key wins
    ckpts = {
        key: checkpoints.load(chosen[key]) if key in chosen else checkpoints.load_pretrained(key)
        for key in ("fc", "cnn")
    }
    x = digit.reshape(1, 1, *digit.shape)  # (1, 1, 28, 28)

    print(f"{_printable(str(args.image))}: read as a 28x28 digit")
    best = {}
    width = max(len(c.info.name) for c in ckpts.values())
    for key, ckpt in ckpts.items():
        probs = predict_proba(ckpt.model, x)[0]  # (10,)
        top = probs.topk(3)
        guesses = "   ".join(f"{int(d)}: {float(p) * 100:5.1f} %" for p, d in zip(top.values, top.indices))
        print(f"  {ckpt.info.name:<{width}}  {guesses}")
        best[key] = int(top.indices[0])
    if best["fc"] == best["cnn"]:
        print(f"both networks read it as {best['fc']}")
    else:
        print(f"the networks DISAGREE: {ckpts['fc'].info.name} reads {best['fc']}, "
              f"{ckpts['cnn'].info.name} reads {best['cnn']}")
    return 0


# --- bench ---------------------------------------------------------------------------------


def cmd_bench(argv: list[str]) -> int:
    import importlib

    try:
        bench = importlib.import_module("digitrec.bench")
    except ModuleNotFoundError as e:
        if e.name != "digitrec.bench":
            raise
        raise DigitrecError("The benchmark (digitrec/bench.py) is not part of this installation.") from None
    return int(bench.main(argv) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
