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

from dataclasses import dataclass, field

import torch

from digitrec import data, models
from digitrec.data import MNIST, DigitSet
from digitrec.train import TrainConfig, evaluate, fit, pixel_order

# The lab's base run: the "plain SGD, FCNet 16-16, 300 steps of 64 digits, seed 0".
BASE: dict = dict(
    architecture="fcnet", widths="16, 16", channels=10, activation="relu", optimizer="sgd", lr=0.1,
    batch_size=64, max_steps=300, train_size=60000,
    seed=0, augment_shift=0, augment_rotation=0.0, shuffle_pixels=False,
)
TRAIN_MEASURE_SIZE = 5000  # training accuracy is measured on (at most) this many of the digits trained on
SHIFTS = tuple(range(-5, 6))  # pixels, for the augmentation experiment's shift curve
SHIFT_DIGITS = 1000  # test digits the shift curve averages over


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
            choices=("0.1", "0.3", "1.0", "3.0"),
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
                "TinyVGG": {"architecture": "tinyvgg", "optimizer": "adam", "lr": 0.003, "max_steps": 600},
                "TinyVGG + augmentation": {"architecture": "tinyvgg", "optimizer": "adam", "lr": 0.003,
                                           "max_steps": 600, "augment_shift": 2, "augment_rotation": 10.0},
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
    train_accuracy: float  # on (up to TRAIN_MEASURE_SIZE of) the digits it trained on
    validation_accuracy: float  # on the held-out validation digits
    test_accuracy: float  # on all 10,000 test digits, measured once at the end
    diverged: bool
    shift_accuracy: tuple[float, ...] = ()  # accuracy at each of SHIFTS (the "shift" experiments only)


def split(mnist: MNIST) -> tuple[DigitSet, DigitSet]:
    """(training digits, validation digits): the lab never trains on the validation digits."""
    return data.validation_split(mnist.train)


def model_config(values: dict) -> models.ModelConfig:
    if values["architecture"] == "tinyvgg":
        return models.TinyVGGConfig(channels=int(values["channels"]))
    widths = tuple(int(w) for w in str(values["widths"]).split(","))
    return models.FCConfig(hidden=widths, activation=values["activation"])


def epochs_for(steps: int, batch_size: int, train_digits: int) -> int:
    """Enough passes over ``train_digits`` for ``steps`` batches (300 digits need 60 passes for 300 steps of 64)."""
    return max(1, -(-steps * batch_size // train_digits))


def train_config(values: dict, train_digits: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs_for(int(values["max_steps"]), int(values["batch_size"]), train_digits), batch_size=int(values["batch_size"]), lr=float(values["lr"]),
        optimizer=values["optimizer"], seed=int(values["seed"]), evaluate_each_epoch=False,
        augment_shift=int(values["augment_shift"]), augment_rotation=float(values["augment_rotation"]),
        shuffle_pixels=bool(values["shuffle_pixels"]), max_steps=int(values["max_steps"]),
    )


def measure(values: dict, mnist: MNIST, label: str = "", with_shift: bool = False) -> LabResult:
    """Train one variant here and now; its training, validation and (once) test accuracy."""
    from digitrec.errors import TrainingDiverged

    training, validation = split(mnist)
    training = training.subset(min(int(values["train_size"]), len(training)))
    model = models.build(model_config(values), seed=int(values["seed"]))
    config = train_config(values, len(training))
    steps, diverged = 0, False
    try:
        steps = fit(model, training, config).step
    except TrainingDiverged:
        diverged = True  # the model kept its last finite weights: measure those
    order = pixel_order(config)
    shift = shift_accuracy(model, mnist.test.subset(SHIFT_DIGITS), SHIFTS, order) if with_shift else ()
    return LabResult(
        label=label, steps=steps, train_digits=len(training),
        train_accuracy=evaluate(model, training.subset(TRAIN_MEASURE_SIZE), order=order)[1],
        validation_accuracy=evaluate(model, validation, order=order)[1],
        test_accuracy=evaluate(model, mnist.test, order=order)[1],
        diverged=diverged, shift_accuracy=tuple(shift),
    )


def run_experiment(key: str, mnist: MNIST) -> dict[str, LabResult]:
    """Every variant of one experiment, measured in order."""
    experiment = EXPERIMENTS[key]
    return {
        label: measure(experiment.values(label), mnist, label, with_shift=experiment.compare == "shift")
        for label in experiment.variants
    }


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
