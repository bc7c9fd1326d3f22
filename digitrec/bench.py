"""The benchmark: how fast ``digitrec.train.fit`` trains, next to the classic tutorial loop.

Run ``python -m digitrec bench`` (or ``python -m digitrec.bench``). Everything in
the table is measured in this one run, on this machine, on MNIST's 60,000
training digits, so the ratios compare like with like:

- **digitrec**: ``digitrec.train.fit`` at ``TrainConfig``'s default batch size,
  Adam at 1e-3, no evaluation between epochs. Digits sit in memory as one uint8
  tensor; each batch is a slice of a seeded permutation scaled on the whole batch.
- **reference**: the loop of pytorch/examples' ``mnist/main.py`` and most
  tutorials: ``torchvision.datasets.MNIST`` with
  ``Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])`` (one PIL image and
  transform per digit), ``DataLoader(batch_size=64, shuffle=True)``, and a
  plain Adam step per batch, on the same network.

Speed is a benchmark, not a test: a timing asserted in a test fails on a slow,
shared machine. Nothing here is imported by the app or the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from digitrec import config, data, models, train
from digitrec.allocator import keep_freed_memory

REFERENCE_BATCH_SIZE = 64  # pytorch/examples' mnist default
REFERENCE_LR = 1e-3  # same Adam learning rate as digitrec's default, so only the loop differs
REFERENCE_MEAN, REFERENCE_STD = 0.1307, 0.3081  # the tutorials' Normalize: MNIST's pixel mean and spread
WARMUP_STEPS = 3  # untimed steps per loop first: oneDNN builds its kernels on first use


@dataclass(frozen=True)
class Timing:
    """One loop's measurement for one model."""

    model: str  # display name, e.g. "FCNet 784-16-16-10"
    loop: str  # "digitrec" or "reference"
    batch_size: int
    steps: int  # optimizer steps timed
    samples: int  # digits trained on while timed
    seconds: float  # wall-clock seconds of the timed steps
    epoch_samples: int  # digits in one epoch (60,000)

    @property
    def seconds_per_epoch(self) -> float:
        """Seconds for one pass over the training set, extrapolated from the digits timed."""
        return self.seconds * self.epoch_samples / self.samples

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds


def synchronize(device: str) -> None:
    """Wait for the GPU's queued work (a no-op on the CPU), so that a clock read after it counts it."""
    if device == "cuda":
        torch.cuda.synchronize()


def time_digitrec(
    model_config: models.ModelConfig,
    digits: data.DigitSet,
    epochs: int = 1,
    batch_size: int | None = None,
    max_steps: int | None = None,
    device: str = "cpu",
) -> Timing:
    """Time ``digitrec.train.fit`` on ``digits`` (all of them, or the first ``max_steps`` steps) on ``device``."""
    batch_size = batch_size or config.BATCH_SIZE
    train_config = train.TrainConfig(epochs=epochs, batch_size=batch_size, evaluate_each_epoch=False,
                                     max_steps=max_steps)
    train.fit(models.build(model_config, seed=1).to(device), digits, replace(train_config, max_steps=WARMUP_STEPS))

    model = models.build(model_config, seed=0).to(device)
    synchronize(device)
    start = time.perf_counter()
    state = train.fit(model, digits, train_config)
    synchronize(device)
    seconds = time.perf_counter() - start
    return Timing(models.display_name(model_config), "digitrec", batch_size, state.step, state.samples_seen,
                  seconds, len(digits))


def reference_loader(root: Path, batch_size: int = REFERENCE_BATCH_SIZE) -> DataLoader:
    """The tutorial data path: torchvision's MNIST, a PIL transform per digit, a DataLoader."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((REFERENCE_MEAN,), (REFERENCE_STD,))])
    dataset = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=True)


def reference_loop(
    model: nn.Module, loader: DataLoader, epochs: int, max_steps: int | None = None
) -> tuple[int, int]:
    """The classic training loop, on the model's device; returns (steps, samples) it trained on."""
    optimizer = torch.optim.Adam(model.parameters(), lr=REFERENCE_LR)
    device = train.device_of(model)
    model.train()
    steps = samples = 0
    for _ in range(epochs):
        for x, y in loader:  # x (64, 1, 28, 28) normalised, y (64,)
            x, y = x.to(device), y.to(device)  # as pytorch/examples' mnist does (a no-op on the CPU)
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
            samples += len(y)
            if max_steps and steps >= max_steps:
                return steps, samples
    return steps, samples


def time_reference(
    model_config: models.ModelConfig, root: Path, epochs: int = 1, max_steps: int | None = None, device: str = "cpu"
) -> Timing:
    """Time the reference loop on the same network on ``device``, reading MNIST from ``root``."""
    loader = reference_loader(root)
    reference_loop(models.build(model_config, seed=1).to(device), loader, 1, WARMUP_STEPS)

    model = models.build(model_config, seed=0).to(device)
    synchronize(device)
    start = time.perf_counter()
    steps, samples = reference_loop(model, loader, epochs, max_steps)
    synchronize(device)
    seconds = time.perf_counter() - start
    return Timing(models.display_name(model_config), "reference", REFERENCE_BATCH_SIZE, steps, samples,
                  seconds, len(loader.dataset))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment_line(device: str = "cpu") -> str:
    import torchvision

    from digitrec.engines.local import device_name

    return (
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} thread(s), CPU: {cpu_name()} ({os.cpu_count()} logical cores), "
        f"Python {platform.python_version()}; training on the {device_name(device)}"
    )


def format_table(timings: list[Timing], epochs: int, max_steps: int | None, device: str = "cpu") -> str:
    """The results as a fixed-width text table with a header and notes."""
    lines = [
        "digitrec bench: training speed on MNIST's 60,000 training digits, measured in this one run",
        environment_line(device),
        f"digitrec : digitrec.train.fit, in-memory uint8 batches, {config.OPTIMIZER.capitalize()} lr {config.LR:g}, "
        "no evaluation",
        "reference: torchvision MNIST + Compose([ToTensor(), Normalize]), "
        f"DataLoader(batch_size={REFERENCE_BATCH_SIZE}, shuffle=True), plain Adam loop",
    ]
    if max_steps:
        lines.append(
            f"Each loop timed its first {max_steps} steps; s/epoch is EXTRAPOLATED from them to 60,000 digits."
        )
    else:
        lines.append(f"Each loop timed {epochs} full epoch(s); s/epoch is the mean.")
    lines.append(f"Each loop first ran {WARMUP_STEPS} untimed warm-up steps.")
    lines.append("")

    header = f"{'model':<22} {'loop':<10} {'batch':>5} {'steps':>6} {'s/epoch':>9} {'samples/s':>10} {'ref/digitrec':>12}"
    lines += [header, "-" * len(header)]
    by_model: dict[str, dict[str, Timing]] = {}
    for t in timings:
        by_model.setdefault(t.model, {})[t.loop] = t
    for name, loops in by_model.items():
        for loop in ("digitrec", "reference"):
            t = loops.get(loop)
            if t is None:
                continue
            ratio = ""
            if loop == "reference" and "digitrec" in loops:
                ratio = f"{t.seconds_per_epoch / loops['digitrec'].seconds_per_epoch:.1f}x"
            lines.append(
                f"{name if loop == 'digitrec' or 'digitrec' not in loops else '':<22} {loop:<10} "
                f"{t.batch_size:>5} {t.steps:>6} {t.seconds_per_epoch:>9.2f} {t.samples_per_s:>10,.0f} {ratio:>12}"
            )
    lines.append("")
    lines.append("ref/digitrec: the reference loop's seconds per epoch over digitrec's (above 1: digitrec is faster).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m digitrec bench",
        description="Time digitrec's training loop against the classic torchvision/DataLoader loop "
        "on the real MNIST training set, and print a table.",
    )
    parser.add_argument("--epochs", type=_positive, default=1, help="epochs to time per loop (default 1)")
    parser.add_argument(
        "--models", default=",".join(config.PRESETS),
        help=f"comma-separated presets from {', '.join(config.PRESETS)} (default: all of them)",
    )
    parser.add_argument(
        "--max-steps", type=_positive, default=None, metavar="N",
        help="time only the first N steps of each loop and extrapolate to a full epoch",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=None, metavar="N",
        help=f"digitrec's batch size (default: {config.BATCH_SIZE}); "
        f"the reference always uses {REFERENCE_BATCH_SIZE}",
    )
    parser.add_argument("--no-reference", action="store_true", help="time digitrec only")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="where every loop and the app's runs train (default: where the app's workers train, "
                        f"the GPU when one is present unless {config.DEVICE_ENV}=cpu)")
    parser.add_argument("--threads", type=_positive, default=None,
                        help="torch threads (default: as many as each training worker uses)")
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also measure the app's runs, the machine's peak and the latencies, and write every "
                        "number with the ratios.* keys to this JSON file")
    parser.add_argument("--app-epochs", type=_positive, default=config.EPOCHS, metavar="N",
                        help="with --json: train the app's runs (and headless fit) for N epochs (default: "
                        f"{config.EPOCHS}, the Train page's default run)")
    parser.add_argument("--app-steps", type=_positive, default=None, metavar="N",
                        help="with --json: stop the app's runs (and headless fit) after N steps")
    parser.add_argument("--no-time-to-accuracy", action="store_true",
                        help="with --json: skip the (long) time-to-accuracy races")
    parser.add_argument("--quick", action="store_true",
                        help="a short run for tests: 20 steps per loop, tiny worker runs, no time-to-accuracy")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(args: list[str] | None = None) -> int:
    """Run the benchmark and print its table; returns the exit status.

    Raises DataUnavailable (a DigitrecError) when MNIST cannot be found.
    """
    parser = build_parser()
    opts = parser.parse_args(args)
    names = [n.strip() for n in opts.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in config.PRESETS]
    if unknown or not names:
        parser.error(f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(config.PRESETS)}")
    from digitrec.engines.local import training_device

    device = opts.device or training_device()
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no GPU here (torch.cuda.is_available() is False)")
    with _environment(config.DEVICE_ENV, device):  # the app's worker processes (started below) train there too
        return _run(opts, names, device)


@contextlib.contextmanager
def _environment(name: str, value: str):
    """Set the environment variable ``name`` for the block (the processes it starts inherit it), then restore it."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _run(opts: argparse.Namespace, names: list[str], device: str) -> int:
    from digitrec.engines.local import run_threads

    threads = opts.threads or run_threads()
    torch.set_num_threads(threads)  # the bench is its own process: the same threads for every loop
    keep_freed_memory()  # as a worker process trains (digitrec.allocator); the reference loop gets it too
    if opts.quick and opts.max_steps is None:
        opts.max_steps = 20

    root = data.ensure_mnist()
    mnist = data.load_mnist(root)
    timings = []
    for name in names:
        model_config = models.PRESETS[name]
        print(f"timing {models.display_name(model_config)}: digitrec ...", file=sys.stderr, flush=True)
        timings.append(time_digitrec(model_config, mnist.train, opts.epochs, opts.batch_size, opts.max_steps,
                                     device))
        if not opts.no_reference:
            print(f"timing {models.display_name(model_config)}: reference ...", file=sys.stderr, flush=True)
            timings.append(time_reference(model_config, root, opts.epochs, opts.max_steps, device))
    print(format_table(timings, opts.epochs, opts.max_steps, device))
    if opts.json:
        from digitrec import bench_app

        report = bench_app.measure(mnist, root, timings, threads=threads, device=device, quick=opts.quick,
                                    names=tuple(names),
                                    max_steps=opts.max_steps, app_steps=opts.app_steps, app_epochs=opts.app_epochs,
                                    time_to_accuracy=not opts.no_time_to_accuracy)
        bench_app.write_json(report, Path(opts.json))
        print()
        print(bench_app.format_report(report))
    return 0


if __name__ == "__main__":
    from digitrec.errors import DigitrecError

    try:
        raise SystemExit(main())
    except DigitrecError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        raise SystemExit(2) from None
