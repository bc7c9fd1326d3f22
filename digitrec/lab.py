"""The training lab's experiments: what each one changes, what to predict, and what it measures.

An experiment is a few variants of one short training run (by default plain
SGD on FCNet 16-16, 300 steps of 64 digits, seed 0) that differ in one
setting: the learning rate, the number of training digits, the activation,
shuffled pixels, augmentation. Each variant is a dict of the values a person
could type into the Train page's form (``digitrec.spec.make_spec`` reads
them), so the lesson widget, the page and ``measure`` below train exactly the
same thing.

``measure`` trains a variant here and now (no thread) and returns plain
numbers: accuracy on the training digits it saw, on the held-out validation
digits, and once, at the end, on the test set. The lessons' numbers come from
it (``digitrec.lessons.lab_facts``), so no measured number is typed into a
lesson.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from digitrec import config as settings
from digitrec import data, models
from digitrec.data import MNIST, DigitSet
from digitrec.train import evaluate, fit, pixel_order

# The lab's base run: the "plain SGD, FCNet 16-16, 300 steps of 64 digits, seed 0".
BASE: dict = dict(
    architecture="fcnet", widths="16, 16", channels=10, activation="relu", optimizer="sgd", lr=0.1,
    batch_size=64, max_steps=300, train_size=60000,
    seed=0, augment_shift=0, augment_rotation=0.0, shuffle_pixels=False,
)
# Training and validation accuracy are measured on the same fixed subsets a run's
# curves use (runs.eval_subset, config.EVAL_SIZE digits each), so the lesson's
# numbers are the numbers the learner's own run shows.
SHIFTS = tuple(range(-5, 6))  # pixels, for the augmentation experiment's shift curve
SHIFT_DIGITS = 1000  # test digits the shift curve averages over
# The augmentation experiment's run: both of its variants train this, one with augmentation on.
_TINYVGG_ADAM = {"architecture": "tinyvgg", "optimizer": "adam", "lr": 0.003, "max_steps": 600}


@dataclass(frozen=True)
class Experiment:
    """One lab experiment: a question, then variants that differ in one setting."""

    key: str
    title: str
    question: str  # asked before anything runs ("predict, then run")
    choices: tuple[str, ...]  # possible predictions, the right one among them
    answer: str  # the choice the measurements support (checked by a test)
    variants: dict[str, dict] = field(default_factory=dict)  # label -> changes to BASE
    compare: str = "test"  # "test", "train_vs_validation" or "shift": which numbers the result table leads with

    def values(self, label: str) -> dict:
        """The full form values of one variant."""
        return {**BASE, **self.variants[label]}


EXPERIMENTS: dict[str, Experiment] = {
    e.key: e
    for e in (
        Experiment(
            key="learning-rate",
            title="How big a step?",
            question="Plain SGD, 300 steps. Which learning rate ends with the best test accuracy?",
            choices=("0.1", "0.3", "1", "3"),
            answer="0.3",
            variants={f"lr {lr:g}": {"lr": lr} for lr in (0.1, 0.3, 1.0, 3.0)},
        ),
        Experiment(
            key="training-size",
            title="300 digits or 55,000?",
            question="The same 300 steps on only 300 training digits, or on all of them. With 300 digits, "
                     "how do its accuracy on the digits it trained on and on the held-out validation digits compare?",
            choices=("both about the same", "training far above validation", "validation far above training"),
            answer="training far above validation",
            variants={"300 digits": {"train_size": 300, "lr": 0.3}, "all training digits": {"lr": 0.3}},
            compare="train_vs_validation",
        ),
        Experiment(
            key="activation",
            title="Take ReLU away",
            question="3,000 steps with and without ReLU between the layers. Without it, where does the accuracy end?",
            choices=("as high as with ReLU", "a few points lower: a straight-line ceiling", "at chance, 10 %"),
            answer="a few points lower: a straight-line ceiling",
            variants={"ReLU": {"max_steps": 3000}, "no activation": {"max_steps": 3000, "activation": "none"}},
        ),
        Experiment(
            key="shuffled-pixels",
            title="Shuffle the pixels",
            question="Every digit's 784 pixels are read in one fixed scrambled order, in training and in testing. "
                     "Which network suffers?",
            choices=("both", "only FCNet", "only TinyVGG", "neither"),
            answer="only TinyVGG",
            variants={
                "FCNet": {"lr": 0.3},
                "FCNet, shuffled": {"lr": 0.3, "shuffle_pixels": True},
                "TinyVGG": {"architecture": "tinyvgg"},
                "TinyVGG, shuffled": {"architecture": "tinyvgg", "shuffle_pixels": True},
            },
        ),
        Experiment(
            key="augmentation",
            title="Augmentation against the shift",
            question="Train TinyVGG with and without random shifts of up to 2 pixels, then slide test digits "
                     "sideways. Which one still reads a digit moved 4 pixels?",
            choices=("the one trained with shifts", "the one trained without", "both equally"),
            answer="the one trained with shifts",
            variants={
                "TinyVGG": _TINYVGG_ADAM,
                "TinyVGG + augmentation": {**_TINYVGG_ADAM, "augment_shift": 2, "augment_rotation": 10.0},
            },
            compare="shift",
        ),
    )
}


@dataclass(frozen=True)
class LabResult:
    """What one variant measured; accuracies 0..1."""

    label: str
    steps: int
    train_digits: int  # how many training digits it could draw batches from
    train_accuracy: float  # on a fixed subset of the digits it trained on (runs.eval_subset)
    validation_accuracy: float  # on the fixed subset of held-out validation digits a run's curves watch
    test_accuracy: float  # on all 10,000 test digits, measured once at the end
    diverged: bool
    shift_accuracy: tuple[float, ...] = ()  # accuracy at each of SHIFTS (the "shift" experiments only)


def split(mnist: MNIST) -> tuple[DigitSet, DigitSet]:
    """(training digits, validation digits): the lab never trains on the validation digits."""
    return data.validation_split(mnist.train)


def epochs_for(steps: int, batch_size: int, train_digits: int) -> int:
    """Enough passes over ``train_digits`` for ``steps`` batches (300 digits need 65 passes for 300 steps of 64)."""
    return max(1, -(-steps * batch_size // train_digits))


def _available(values: dict) -> int:
    """The training digits a variant can have: its train_size, less the held-out validation digits."""
    return min(int(values["train_size"]), data.split_sizes(settings.TRAIN_DIGITS)[0])


def form_values(values: dict) -> dict:
    """A variant's values as ``spec.make_spec`` keyword arguments, with enough epochs for its steps."""
    return {**values, "epochs": epochs_for(int(values["max_steps"]), int(values["batch_size"]), _available(values)),
            "max_epochs": settings.MAX_EPOCHS}


def run_spec(values: dict):
    """The RunSpec the lab's page trains a variant with: ``form_values`` through the page's own checks,
    evaluated on the race's fixed cadence (its curves are what the learner reads, and its runs are too
    short for the recording budget to leave them points)."""
    from digitrec.race import race_cadence
    from digitrec.spec import make_spec

    return race_cadence(make_spec(**form_values(values)), _available(values))


def measure(values: dict, mnist: MNIST, label: str = "", with_shift: bool = False) -> LabResult:
    """Train one variant here and now; its training, validation and (once) test accuracy."""
    from digitrec.errors import TrainingDiverged

    from digitrec.spec import make_spec

    spec = make_spec(**form_values(values))  # the same checks and the same spec as the page's runs
    training, validation = split(mnist)
    training = training.subset(min(spec.train_size, len(training)))
    model = models.build(spec.model, seed=spec.train.seed)
    config = replace(spec.train, evaluate_each_epoch=False)
    steps, diverged = 0, False
    try:
        steps = fit(model, training, config).step
    except TrainingDiverged:
        diverged = True  # the model kept its last finite weights: measure those
    order = pixel_order(config)
    shift = shift_accuracy(model, mnist.test.subset(SHIFT_DIGITS), SHIFTS, order) if with_shift else ()
    from digitrec.runs import eval_subset

    return LabResult(
        label=label, steps=steps, train_digits=len(training),
        train_accuracy=evaluate(model, eval_subset(training), order=order)[1],
        validation_accuracy=evaluate(model, eval_subset(validation), order=order)[1],
        test_accuracy=evaluate(model, mnist.test, order=order)[1],
        diverged=diverged, shift_accuracy=tuple(shift),
    )


def run_experiment(key: str, mnist: MNIST) -> dict[str, LabResult]:
    """Every variant of one experiment, measured in order (once per process: the runs are seeded)."""
    cached = _RESULTS.get(key)
    if cached is not None and cached[0] is mnist.train.images:
        return cached[1]
    experiment = EXPERIMENTS[key]
    results = {
        label: measure(experiment.values(label), mnist, label, with_shift=experiment.compare == "shift")
        for label in experiment.variants
    }
    _RESULTS[key] = (mnist.train.images, results)
    return results


# Results of run_experiment, with the training digits they were measured on (seeded runs give the same numbers).
_RESULTS: dict[str, tuple[torch.Tensor, dict[str, LabResult]]] = {}


def shift_accuracy(
    model: torch.nn.Module, digits: DigitSet, shifts=SHIFTS, order: torch.Tensor | None = None
) -> list[float]:
    """Accuracy (0..1) on ``digits`` moved sideways by each of ``shifts`` pixels."""
    from digitrec.shift import shift_digit

    out = []
    for s in shifts:
        moved = DigitSet(shift_digit(digits.images, s, 0), digits.labels)
        out.append(evaluate(model, moved, order=order)[1])
    return out


def result_of(label: str, progress) -> LabResult:
    """A LabResult from an ended run's ``RunProgress`` (the lab widget's runs)."""
    last = progress.evals[-1] if progress.evals else None
    nan = float("nan")
    return LabResult(
        label=label, steps=progress.step, train_digits=progress.plan.train_size,
        train_accuracy=last.train_accuracy if last and last.train_accuracy is not None else nan,
        validation_accuracy=last.val_accuracy if last and last.val_accuracy is not None else nan,
        test_accuracy=progress.final_test_accuracy if progress.final_test_accuracy is not None else nan,
        diverged=progress.status.value == "diverged",
    )


def mean_far_shift(result: LabResult, far: int = 4) -> float:
    """Mean accuracy at -far and +far pixels of a result's shift curve."""
    at = dict(zip(SHIFTS, result.shift_accuracy))
    return (at[-far] + at[far]) / 2


def verdict(key: str, results: dict[str, LabResult]) -> str:
    """Which of the experiment's choices these measurements support (the lesson's answer is checked by it)."""
    e = EXPERIMENTS[key]
    r = results
    if key == "learning-rate":
        best = max(r.values(), key=lambda x: x.test_accuracy)
        return best.label.removeprefix("lr ")
    if key == "training-size":
        small = r["300 digits"]
        gap = small.train_accuracy - small.validation_accuracy
        if gap > 0.1:
            return e.choices[1]
        return e.choices[2] if gap < -0.1 else e.choices[0]
    if key == "activation":
        drop = r["ReLU"].test_accuracy - r["no activation"].test_accuracy
        if r["no activation"].test_accuracy < 0.2:
            return e.choices[2]
        return e.choices[1] if drop > 0.01 else e.choices[0]
    if key == "shuffled-pixels":
        fc = r["FCNet"].test_accuracy - r["FCNet, shuffled"].test_accuracy > 0.02
        cnn = r["TinyVGG"].test_accuracy - r["TinyVGG, shuffled"].test_accuracy > 0.02
        return {(True, True): "both", (True, False): "only FCNet", (False, True): "only TinyVGG"}.get((fc, cnn), "neither")
    if key == "augmentation":
        plain, augmented = mean_far_shift(r["TinyVGG"]), mean_far_shift(r["TinyVGG + augmentation"])
        if augmented - plain > 0.05:
            return e.choices[0]
        return e.choices[1] if plain - augmented > 0.05 else e.choices[2]
    raise KeyError(key)
