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

# Each optimizer with the one sentence the app shows where it is chosen.
OPTIMIZER_EXPLANATIONS = {
    "sgd": "Plain SGD: every weight moves by −learning rate × its gradient, the formula of lesson 6, nothing else.",
    "momentum": "SGD with momentum: each step also keeps 0.9 of the previous step, so the weights roll on "
                "through small bumps and speed up along a steady slope.",
    "adam": "Adam: each weight gets its own step size from the recent size of its gradients, so one learning "
            "rate (about 0.001) suits every layer.",
}
OPTIMIZERS = tuple(OPTIMIZER_EXPLANATIONS)  # "sgd" is plain SGD (no momentum)
SCHEDULES = ("constant", "cosine", "onecycle")
# FCNet's activation after each hidden layer: "none" leaves the network one
# linear map in disguise (the lab's linear ceiling, about 92 %).
ACTIVATIONS = ("relu", "none")
FC_ACTIVATION = "relu"

EPOCHS = 3
# 128 keeps per-step Python overhead small next to the arithmetic while
# still giving ~470 updates per epoch.
BATCH_SIZE = 128
# Adam at 1e-3 trains both networks well without tuning; SGD needs ~0.05-0.1.
LR = 1e-3
OPTIMIZER = "adam"
MOMENTUM = 0.9  # the "momentum" optimizer's
# "cosine" lowers the rate smoothly to 0 by the last step, so the final
# weights settle instead of jittering around the minimum; "onecycle" first
# warms up from a 25th of the rate to the full rate (30 % of the steps), then
# lowers it to about 0, which tolerates (and pays off) a higher rate;
# "constant" is easier to reason about in the lessons.
SCHEDULE = "constant"
# Mixed precision (TrainConfig.mixed_precision): a network with convolutions runs its forward pass in
# bfloat16 where the processor has bfloat16 instructions (weights, gradients, Adam and the loss stay
# float32). TinyVGG, 1 thread, same process, alternating: 1,000-1,300 -> 2,000-2,200 digits/s on this
# 2-core AMD EPYC (avx512_bf16) under load, and 96.7 % vs 96.6 % test accuracy after one epoch. Fully
# connected networks gained nothing (784-128-64-10: 10,200-12,700 vs 10,300-12,100), so they stay float32.
MIXED_PRECISION = True
# The fastest recipe to a test accuracy we found (python -m digitrec bench races the app's own fit
# with it against the tutorial loop): Adam with the one-cycle schedule at 3x the default rate.
# Over 2 epochs TinyVGG had 98.0 % after 1.5 and 98.15 % after 1.75; over 3 its best was 98.48 %,
# short of the benchmark's 98.5 %, so 4 (FCNet 784-128-64-10 reached 97 % in 2 of 3 epochs).
FAST_LR = 3e-3
FAST_SCHEDULE = "onecycle"
FAST_BATCH_SIZE = 128
FAST_EPOCHS = 4
SEED = 0  # fixes the initial weights and the batch order
RACE_EPOCHS = 1  # a race's default: one pass is enough to see who is faster
RACE_TARGETS = (0.95, 0.97, 0.98)  # validation accuracies the race table times and its chart marks
# A race's runs evaluate on a fixed cadence (digitrec.race.race_cadence), not within the recording
# budget: its table reads "seconds to 95 %" off the curves, so each needs points. About this many
# points a run, each on this many validation digits (and as many training digits): fewer than a
# Train page run's EVAL_SIZE, so a TinyVGG point costs a couple of its training steps.
RACE_EVAL_POINTS = 30
RACE_EVAL_SIZE = 500


# --- limits -------------------------------------------------------------------------------------

MAX_EPOCHS = 1000  # the library's (and the command line's) limit
MAX_APP_EPOCHS = 20  # the app trains at most this many epochs (a server is shared)
BATCH_RANGE = (1, TRAIN_DIGITS)
LR_MAX = 10.0  # learning rates are above 0 and at most this
SEED_RANGE = (0, 2**31 - 1)
# "Quick mode": train on the first N training digits. 300 overfits within a few
# hundred steps (the lab's lesson); fewer makes curves of noise.
TRAIN_DIGITS_RANGE = (300, TRAIN_DIGITS)
TRAIN_SIZE_CHOICES = (300, 1000, 3000, 10000, 30000, TRAIN_DIGITS)  # the app's quick-mode slider
SNAPSHOT_EVERY_RANGE = (0, 10**6)  # 0: choose automatically

# The lab's data settings.
MAX_AUGMENT_SHIFT = 4  # pixels; MNIST's digits sit in a 20 x 20 box with 4 pixels of margin
MAX_AUGMENT_ROTATION = 30.0  # degrees; more starts to turn one digit into another
AUGMENT_SHIFT_CHOICES = (0, 1, 2, 3, 4)  # the Train page's slider
AUGMENT_ROTATION_CHOICES = (0, 5, 10, 15, 20, 30)
LAB_AUGMENT = (2, 10.0)  # the "augmentation on" switch of a lesson: up to 2 px and 10 degrees
# A lab run may end after a set number of steps (a lesson's 300); at most this many.
MAX_STEPS_RANGE = (1, 100_000)

# A training run shares the server's memory with every other session: refuse
# settings that would need more than this before training starts.
MEMORY_BUDGET_BYTES = 2 * 2**30
# A network costing more multiply-adds per digit than this (about 4x the pretrained TinyVGG) has its
# 10,000-test-digit passes (dead units, top digits) wait for a button: a 256-channel TinyVGG would
# hold the page for many minutes.
STATISTICS_MAX_MACS = 5_000_000


# --- what a run records ---------------------------------------------------------------------------

# The validation split (digitrec.data.validation_split): this many of the
# 60,000 training digits are held out by a seeded permutation and never
# trained on; a run's curves watch them, and the test set is used once, at the end.
VALIDATION_SIZE = 5000
SPLIT_SEED = 2024
EVAL_SIZE = 2000  # validation digits evaluated during a run (a fixed subset: the curves stay cheap)
SUBSET_SEED = 1234  # fixes which validation digits form the subset (the same for every run)
# "Shuffle the pixels": one fixed permutation of the 784 positions, the same for
# training, validation and testing (a different one would be a different task).
PERMUTATION_SEED = 7
EVAL_POINTS = 30  # about this many test-subset points per run when eval_every is automatic
SNAPSHOTS = 30  # about this many weight snapshots per run when snapshot_every is automatic
MAX_SNAPSHOTS = 300  # a chosen snapshot_every may not make more (memory: ~50 KB each)
MAX_STEP_POINTS = 3000  # per-step history is thinned to about this many points
MAX_UNITS = {"fcnet": 16, "tinyvgg": 64}  # first-layer units kept per snapshot
# A snapshot also keeps the whole network's weights (so "Inside a unit" can show a unit's biography
# at that moment), within this many bytes over all of a run's snapshots: FCNet (51 KB) and TinyVGG
# (30 KB) keep every one; a wide network keeps every k-th (and always the last).
SNAPSHOT_WEIGHTS_BUDGET = 16 * 2**20
LIVE_EVERY_S = 0.2  # refresh the live probe and weights at most this often
# Evaluations, snapshots and live updates together may take at most this share of a
# run's wall clock: an automatic cadence (eval_every / snapshot_every 0) stretches
# when they cost more, so a short TinyVGG run is not mostly evaluation. Half of issue 11's
# 10 %: a run also spends its end on the validation digits and the test set, and the whole
# app's run was to keep 0.9 of headless fit's speed. A curve point (2,000 validation and 2,000
# training digits) cost FCNet about 5 ms and TinyVGG about 0.2 s (1 thread, a 2-core Intel), and
# each epoch's red diamond (all 5,000 validation digits, as headless fit measures its test digits
# each epoch) counts too, and took TinyVGG about 8 % of its epoch there. So the Train page's default
# run (EPOCHS) got 4 curve points for FCNet and 3 for TinyVGG (its start, middle and end) beside a
# diamond each epoch, and an 8-epoch TinyVGG run 6; longer runs get more, up to about EVAL_POINTS.
# Where a short run's curves are the point (the race, the lab) it evaluates on a fixed cadence
# instead (race.race_cadence), outside this budget.
RECORDING_BUDGET = 0.05


# Lesson 8's "your model" line measures a learner's own model on this many of the training digits
# (the first ones: a notebook that trained on MNIST has seen them) beside its test accuracy.
OWN_MODEL_TRAIN_DIGITS = 10_000


# --- where runs train (digitrec.engines) ---------------------------------------------------------

MAX_RUNS_ENV = "DIGITREC_MAX_RUNS"  # runs training at once on a server (default: cores - 1, at least 1)
RUN_THREADS_ENV = "DIGITREC_RUN_THREADS"  # PyTorch threads of each worker process
# A server keeps one worker process started ahead of the next run (digitrec.engines.local.SpareWorker):
# a spawned worker spends 5-6.5 s importing torch and the torch._dynamo that Optimizer.step imports
# (2-core AVX2 EPYC) before a run's first point; with a spare waiting, 0.2 s. "0" here: no spare (a
# server short of memory: a waiting spare holds about 370 MB of its own, 680 MB resident with the
# libraries it shares with the other torch processes; `make serve` keeps one per replica).
SPARE_WORKER_ENV = "DIGITREC_SPARE_WORKER"
# The next spare imports on a free core: at once while fewer runs train than the queue allows, else
# when a run ends (about 3 s of imports beside FCNet's half-second run slowed it 7 % on 2 cores), or
# once a run has trained this long: a long run hardly feels them, and the Start after it finds a spare.
SPARE_BESIDE_RUN_AFTER_S = 5.0
# Without DIGITREC_RUN_THREADS a worker takes its share of the cores the pages leave:
# (cores - 1) // K, at least 1 (digitrec.engines.local.run_threads): a class server with K = 2
# on 16 cores gives each run 7. On this 2-core machine that is 1, and it should be: one run
# alone with 2 threads trained TinyVGG at 8,400-8,700 digits/s when the other core was free but
# 600-840 when another session's work held it (OpenMP threads wait for each other), against
# 5,000-5,400 with 1 thread (load average 6; FCNet: 7,800 vs 26,000 digits/s under load).
# "0": train with PyTorch's own operations instead of digitrec's C kernels (digitrec.native: max
# pooling, the image's convolution, gathering a batch): to compare the two, or where compiling is not wanted.
NATIVE_ENV = "DIGITREC_NATIVE"
DEVICE_ENV = "DIGITREC_DEVICE"  # "cpu" keeps training off a GPU that is present
REPORT_EVERY_S = 0.25  # a worker sends its progress this often (the page polls once a second)
STOP_GRACE_S = 3.0  # a worker asked to stop gets this long before it is terminated
# A browser session without a browser for the app's reconnect window (Streamlit's
# server.disconnectedSessionTTL, 120 s unless set: the one grace period, so a reload or a
# network blip finds its run still training) has ended: its runs stop, its networks and
# uploads are let go (digitrec.engines.sessions). The janitor looks this often.
SESSION_SWEEP_S = 1.0

# Ray (digitrec.engines.ray_cluster): runs train as actors on a cluster instead of local workers.
ENGINE_ENV = "DIGITREC_ENGINE"  # "local" (default) or "ray"; `--engine ray` on the app or `make serve` sets it
ENGINES = ("local", "ray")
RAY_ADDRESS_ENV = "DIGITREC_RAY_ADDRESS"  # set: the engine is "ray" (unless DIGITREC_ENGINE says "local")
# What `--engine ray` connects to without an address: Ray's "auto", the cluster this machine
# has joined with `ray start`. "local" starts a private Ray instance inside the server instead
# (to try the engine on one machine; the test suite uses it).
RAY_ADDRESS = "auto"
RAY_LOCAL = "local"
RAY_CONNECT_TIMEOUT_S = 60.0  # a cluster (or a private instance starting) that has not answered by then is unreachable
RAY_RETRY_S = 60.0  # after a failure, new runs train locally for this long before the cluster is tried again
# A run's actor that has not answered for this long (the cluster is busy starting it, or gone) is
# taken as lost: its run starts again on this server's own workers.
RAY_SILENCE_S = 120.0
# A GPU node serves many classrooms: each run asks for this share of a GPU when the cluster has
# GPUs (the networks are small: ten runs fit on one GPU), else for one CPU.
RAY_GPU_SHARE = 0.1
# App processes of one server sharing the cluster (scripts/serve sets it): each lets 1/N of the
# cluster's places train at once, so the replicas together do not ask for more than it has.
REPLICAS_ENV = "DIGITREC_REPLICAS"
