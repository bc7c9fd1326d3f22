"""Every setting in one place: the network presets, the training defaults and the limits.

The command line, the app's widgets, the benchmark, the run specification
(``digitrec.spec``), the models and the training loop all read their defaults
and ranges from here, so a setting is changed once. This module holds plain
data only and imports nothing heavy: ``import digitrec.config`` must not
import torch (a test checks it), so a form or ``--help`` can use it before
torch is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- the data -----------------------------------------------------------------------------------

TRAIN_DIGITS = 60_000  # MNIST's training set
TEST_DIGITS = 10_000  # MNIST's test set


# --- the networks -------------------------------------------------------------------------------

# FCNet's hidden widths. 16-16 is the network of 3Blue1Brown's video: small
# enough to show every neuron, still about 95 % accurate.
FC_HIDDEN = (16, 16)
# TinyVGG's feature maps per conv layer. CNN Explainer uses 10: enough for 99 %
# on MNIST and few enough to show every map on one screen.
CNN_CHANNELS = 10
# Padding 1 keeps each block's maps the size of its input (28 -> 28, 14 -> 14),
# so a feature map lines up pixel for pixel with the digit.
CNN_PADDING = 1

# At most 8 hidden layers: enough for any lesson, and a crafted checkpoint
# cannot make us build thousands of layers before its tensors are checked.
MAX_HIDDEN_LAYERS = 8
WIDTH_RANGE = (1, 4096)  # neurons in one hidden layer
CHANNELS_RANGE = (1, 256)  # TinyVGG feature maps per conv layer
# The app's Train page offers fewer (the command line, all of CHANNELS_RANGE): every map
# of a wider network makes each explorer page slower for a whole class on one server.
APP_CHANNELS_RANGE = (1, 64)
PADDINGS = (0, 1)


@dataclass(frozen=True)
class Preset:
    """A named network: which architecture, and its size."""

    architecture: str  # "fcnet" or "tinyvgg"
    label: str  # what a person reads in a picker or --help
    hidden: tuple[int, ...] = ()  # fcnet only
    channels: int = 0  # tinyvgg only

    @property
    def widths_text(self) -> str:
        """The hidden widths as a person types them: "16, 16" ("" for a CNN)."""
        return ", ".join(str(w) for w in self.hidden)


PRESETS: dict[str, Preset] = {
    "fc": Preset("fcnet", "784-16-16-10 (3Blue1Brown's)", hidden=FC_HIDDEN),
    "fc-wide": Preset("fcnet", "784-128-64-10 (wide)", hidden=(128, 64)),
    "cnn": Preset("tinyvgg", "TinyVGG (CNN Explainer's)", channels=CNN_CHANNELS),
}
CUSTOM_WIDTHS = "32, 16"  # what the Train page's "custom widths" box starts with


# --- training defaults (the lessons' defaults) ----------------------------------------------------

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")

EPOCHS = 3
# 128 keeps per-step Python overhead small next to the arithmetic while
# still giving ~470 updates per epoch.
BATCH_SIZE = 128
# Adam at 1e-3 trains both networks well without tuning; SGD needs ~0.05-0.1.
LR = 1e-3
OPTIMIZER = "adam"
MOMENTUM = 0.9  # SGD only
# "cosine" lowers the rate smoothly to 0 by the last step, so the final
# weights settle instead of jittering around the minimum; "constant" is
# easier to reason about in the lessons.
SCHEDULE = "constant"
SEED = 0  # fixes the initial weights and the batch order
RACE_EPOCHS = 1  # a race's default: one pass is enough to see who is faster
RACE_TARGETS = (0.95, 0.97, 0.98)  # test accuracies the race table times and its chart marks


# --- limits -------------------------------------------------------------------------------------

MAX_EPOCHS = 1000  # the library's (and the command line's) limit
MAX_APP_EPOCHS = 20  # the app trains at most this many epochs (a server is shared)
BATCH_RANGE = (1, TRAIN_DIGITS)
LR_MAX = 10.0  # learning rates are above 0 and at most this
SEED_RANGE = (0, 2**31 - 1)
TRAIN_DIGITS_RANGE = (10, TRAIN_DIGITS)  # "quick mode": train on the first N training digits
TRAIN_SIZE_CHOICES = (300, 1000, 3000, 10000, 30000, TRAIN_DIGITS)  # the app's quick-mode slider
SNAPSHOT_EVERY_RANGE = (0, 10**6)  # 0: choose automatically

# A training run shares the server's memory with every other session: refuse
# settings that would need more than this before training starts.
MEMORY_BUDGET_BYTES = 2 * 2**30


# --- what a run records ---------------------------------------------------------------------------

EVAL_SIZE = 2000  # digits in the test subset evaluated during a run
SUBSET_SEED = 1234  # fixes which test digits form the subset (the same for every run)
EVAL_POINTS = 30  # about this many test-subset points per run when eval_every is automatic
SNAPSHOTS = 30  # about this many weight snapshots per run when snapshot_every is automatic
MAX_SNAPSHOTS = 300  # a chosen snapshot_every may not make more (memory: ~50 KB each)
MAX_STEP_POINTS = 3000  # per-step history is thinned to about this many points
MAX_UNITS = {"fcnet": 16, "tinyvgg": 64}  # first-layer units kept per snapshot
LIVE_EVERY_S = 0.2  # refresh the live probe and weights at most this often
