"""The app's only caching and session-state code.

Pages ask this module for the data, the networks and the current digit; they
never call ``st.cache_*`` or touch ``st.session_state`` keys of their own for
shared things. Cached models are shared by every browser session, so nothing
here (or anywhere in the app) may leave hooks, gradients or a changed mode on
them: the ``digitrec`` functions that need those work on copies.

The current digit and network live in the URL (``?digit=test:42&net=cnn``)
so a link reproduces the view.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import hashlib
import threading
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import streamlit as st
import torch
from torch import nn

from digitrec import checkpoints, data, models, samples
from digitrec.errors import DigitrecError

PRETRAINED_LABELS = {"fc": "FCNet (pretrained)", "cnn": "TinyVGG (pretrained)"}
DIGIT_KEY = "digit"  # session_state key: the current Digit
NET_KEY = "net"  # session_state key: the chosen network's key
MY_MODELS_KEY = "my_models"  # session_state key: {key: Network} trained or uploaded this session


# ---------------------------------------------------------------- data and models


@st.cache_resource(show_spinner="Loading MNIST into memory…")
def _mnist() -> tuple[data.MNIST | None, str]:
    try:
        return data.load_mnist(), ""
    except DigitrecError as e:
        return None, str(e)


def mnist() -> data.MNIST | None:
    """Both MNIST splits as in-memory tensors, loaded once per server; None if unavailable."""
    return _mnist()[0]


def require_mnist() -> data.MNIST:
    """MNIST, or stop the page with a sentence that says how to get it."""
    dataset, message = _mnist()
    if dataset is None:
        st.info("This part needs the MNIST dataset. " + message)
        st.stop()
    return dataset


@st.cache_resource(show_spinner="Loading pretrained weights…")
def pretrained(key: str) -> checkpoints.Checkpoint:
    """A pretrained checkpoint ('fc' or 'cnn'), loaded once per server and never mutated."""
    return checkpoints.load_pretrained(key)


@dataclass(frozen=True)
class Network:
    key: str  # "fc", "cnn", or "my-…" for a model trained/uploaded this session
    label: str  # shown in pickers
    model: nn.Module
    config: models.ModelConfig
    test_accuracy: float | None
    # A network trained on the Train page: its run's snapshots (digitrec.runs.Snapshot), so "Inside a unit"
    # can show a unit at each moment of training. Empty for every other network.
    snapshots: tuple = ()

    @property
    def is_cnn(self) -> bool:
        return models.spec_of(self.config).has_conv  # a preset or a learner's own: convolutional if it convolves


def networks() -> dict[str, Network]:
    """Every network this session can look at: the two pretrained ones, then the user's own."""
    nets = {}
    for key, label in PRETRAINED_LABELS.items():
        try:
            nets[key] = pretrained_network(key)
        except DigitrecError as e:
            st.warning(f"{label} is unavailable: {e}")
    nets.update(shown_models())
    nets.update(st.session_state.get(MY_MODELS_KEY, {}))
    return nets


def pretrained_network(key: str) -> Network:
    """The pretrained network ``key`` ('fc' or 'cnn'); raises DigitrecError when its weights cannot be loaded."""
    ck = pretrained(key)
    return Network(key, PRETRAINED_LABELS[key], ck.model, ck.config, ck.info.test_accuracy)


def shown_models() -> dict[str, Network]:
    """Models a notebook sent with ``digitrec.show(model)``: the checkpoints in its folder, as "mine: NAME"."""
    from digitrec import notebook

    folder = notebook.shown_dir()
    if not folder.is_dir():
        return {}
    files = sorted(folder.glob("*.safetensors"))[:50]
    nets = {}
    for path in files:
        try:
            ck = _shown_checkpoint(str(path), path.stat().st_mtime_ns)
        except (DigitrecError, OSError):
            continue  # a half-written or foreign file: the notebook's next show() replaces it
        key = notebook.network_key(path.stem)
        accuracy = f" ({ck.info.test_accuracy:.1%})" if ck.info.test_accuracy is not None else ""
        nets[key] = Network(key, f"mine: {path.stem}{accuracy}", ck.model, ck.config, ck.info.test_accuracy)
    return nets


@st.cache_resource(show_spinner=False, max_entries=50)
def _shown_checkpoint(path: str, mtime_ns: int) -> checkpoints.Checkpoint:  # mtime: a new show() reloads it
    return checkpoints.load(path)


# Each of a learner's own networks can take hundreds of MB (an 8 x 4096 FCNet is 460 MiB)
# on a server a whole class shares, so a session keeps at most this many.
MAX_MY_MODELS = 4
_MY_MODEL_DIGESTS_KEY = "_my_model_digests"  # session_state key: {sha256 of an uploaded file: network key}


def add_my_model(key: str, label: str, model: nn.Module, test_accuracy: float | None, snapshots: tuple = ()) -> Network:
    """Make a model trained or uploaded in this session available on every page (``snapshots``: its run's).

    Raises DigitrecError (with the sentence to show) when the session already holds
    MAX_MY_MODELS of its own networks.
    """
    mine = st.session_state.setdefault(MY_MODELS_KEY, {})
    if key not in mine and len(mine) >= MAX_MY_MODELS:
        raise DigitrecError(
            f"This session already holds {len(mine)} networks of your own, the most one session keeps on a "
            "shared server. Download the ones you want to keep, then reload the page to start a fresh session."
        )
    net = Network(key, label, model, model.config, test_accuracy, tuple(snapshots))
    mine[key] = net
    return net


def uploaded_model(data: bytes) -> Network | None:
    """The network this session already made from a file with exactly these bytes, if it still has it."""
    key = st.session_state.get(_MY_MODEL_DIGESTS_KEY, {}).get(hashlib.sha256(data).hexdigest())
    return st.session_state.get(MY_MODELS_KEY, {}).get(key) if key else None


def remember_upload(data: bytes, net: Network) -> None:
    """Note that ``net`` was made from the uploaded ``data``, so the same file is never loaded twice."""
    st.session_state.setdefault(_MY_MODEL_DIGESTS_KEY, {})[hashlib.sha256(data).hexdigest()] = net.key


def network(key: str | None = None) -> Network:
    """The network with ``key``, or the chosen one (URL ``net=`` on a session's first run), or the first available."""
    nets = networks()
    if not nets:
        st.error("No network could be loaded. Run `make weights` to rebuild the pretrained weights.")
        st.stop()
    if NET_KEY not in st.session_state and st.query_params.get("net") in nets:
        st.session_state[NET_KEY] = st.query_params["net"]  # a shared link's choice outlives page switches
    key = key or st.session_state.get(NET_KEY)
    return nets.get(key) or next(iter(nets.values()))


def set_network(key: str) -> None:
    st.session_state[NET_KEY] = key
    net = networks().get(key)
    if net is not None:  # remember the choice per kind, so visiting the other kind's page does not lose it
        st.session_state[f"{NET_KEY}_{'cnn' if net.is_cnn else 'fc'}"] = key
    st.query_params["net"] = key


def networks_of_kind(cnn: bool) -> dict[str, Network]:
    return {k: n for k, n in networks().items() if n.is_cnn == cnn}


def network_of_kind(cnn: bool) -> Network | None:
    """The chosen network if it is of this kind (CNN or not), else the first of that kind, else None."""
    current = network()
    if current.is_cnn == cnn:
        return current
    of_kind = networks_of_kind(cnn)
    remembered = st.session_state.get(f"{NET_KEY}_{'cnn' if cnn else 'fc'}")
    return of_kind.get(remembered) or next(iter(of_kind.values()), None)


@st.cache_resource(show_spinner="Classifying the 10,000 test digits…")
def _pretrained_test_probabilities(key: str) -> torch.Tensor:
    from digitrec.train import predictions

    return predictions(pretrained(key).model, require_mnist().test)


def test_probabilities(net: Network) -> torch.Tensor:
    """(10000, 10) class probabilities of ``net`` on the test set, computed once."""
    if net.key in PRETRAINED_LABELS:
        return _pretrained_test_probabilities(net.key)
    cache = st.session_state.setdefault("_test_probabilities", {})
    if net.key not in cache:
        from digitrec.train import predictions

        cache[net.key] = predictions(net.model, require_mnist().test)
    return cache[net.key]


# ---------------------------------------------------------------- the current digit


@dataclass(frozen=True)
class Digit:
    """The digit every page shows. pixels: (28, 28) float32 in [0, 1], ink bright."""

    pixels: torch.Tensor
    source: str  # human description: "test digit #42", "sample 7", "your drawing"
    label: int | None  # the true class when known
    ref: str  # how the URL names it: "test:42", "sample:7", "px:<base64>"

    @property
    def x(self) -> torch.Tensor:
        """The model input (1, 1, 28, 28)."""
        return self.pixels.reshape(1, 1, data.IMAGE_SIZE, data.IMAGE_SIZE)


def sample_digit(d: int) -> Digit:
    return Digit(samples.sample_digit(d), f"sample {d}", d, f"sample:{d}")


def test_digit(index: int) -> Digit:
    test = require_mnist().test
    index = int(index) % len(test)
    pixels = test.images[index].float() / 255.0
    return Digit(pixels, f"test digit #{index}", int(test.labels[index]), f"test:{index}")


def pixels_digit(pixels: torch.Tensor, source: str, label: int | None = None) -> Digit:
    """A drawn or uploaded digit; its pixels travel in the URL as 784 base64 bytes."""
    as_bytes = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
    ref = "px:" + base64.urlsafe_b64encode(as_bytes).decode()
    return Digit(pixels.float().clone(), source, label, ref)


def digit_from_ref(ref: str) -> Digit | None:
    """The digit a URL names, or None if the reference is malformed."""
    try:
        kind, _, value = ref.partition(":")
        if kind == "sample":
            return sample_digit(int(value)) if 0 <= int(value) <= 9 else None
        if kind == "test" and mnist() is not None:
            return test_digit(int(value)) if 0 <= int(value) < len(mnist().test) else None
        if kind == "px":
            raw = base64.urlsafe_b64decode(value.encode())
            if len(raw) != data.IMAGE_SIZE**2:
                return None
            pixels = torch.frombuffer(bytearray(raw), dtype=torch.uint8).float() / 255.0
            return pixels_digit(pixels.reshape(data.IMAGE_SIZE, data.IMAGE_SIZE), "a digit from a link")
    except (ValueError, TypeError):
        return None
    return None


def current_digit() -> Digit:
    """The digit of every page: set in this session, else named by the URL, else sample 7."""
    digit = st.session_state.get(DIGIT_KEY)
    if digit is None:
        ref = st.query_params.get("digit")
        digit = digit_from_ref(ref) if ref else None
        if digit is None:
            digit = sample_digit(7)
            if ref:  # say so rather than silently show another digit than the link meant
                st.toast(f"The link's digit ({plain(ref[:24])}) could not be read, so this shows sample 7.")
        st.session_state[DIGIT_KEY] = digit
    return digit


def plain(text: str) -> str:
    """``text`` (from a URL, a file name) escaped so Streamlit's Markdown shows it as typed.

    Every ASCII punctuation character gets a backslash (CommonMark lets any of them be
    escaped), so a crafted link cannot make a real link, an image the browser fetches,
    a :red[colour] or :material/icon: directive, or $maths$ out of it.
    """
    return "".join("\\" + ch if ch.isascii() and not ch.isalnum() and not ch.isspace() else ch
                   for ch in " ".join(str(text).split()))


def set_current_digit(digit: Digit) -> None:
    st.session_state[DIGIT_KEY] = digit
    st.query_params["digit"] = digit.ref


# ---------------------------------------------------------------- lessons


LAB_FACT_PREFIX = "lab."  # digitrec.lessons.LAB_PREFIX, without importing the lessons module here


@st.cache_resource(show_spinner="Running the lab's experiments for this lesson's numbers (once per server)…")
def _lab_facts_cached() -> dict[str, str]:
    from digitrec.lessons import lab_facts

    return lab_facts(require_mnist(), {k: pretrained(k) for k in PRETRAINED_LABELS})


def lesson_facts(names: set[str] | None = None) -> dict[str, str]:
    """The numbers lesson text may name: the pretrained models' facts, the training defaults and the current digit's.

    names: the placeholders the lesson uses; facts measured on MNIST (zero
    fractions, train accuracy, ...) are added only for the groups these need,
    each measured once per server (None: all of them).
    """
    from digitrec.lessons import DATASET_FACT_GROUPS, digit_facts, fact_groups, settings_facts

    nets = {k: n.model for k, n in networks().items() if k in PRETRAINED_LABELS}
    digit = current_digit()
    facts = dict(_model_facts_cached())
    facts.update(settings_facts())
    facts.update(digit_facts(nets, digit.x, digit.label))
    for key, net in networks().items():
        if key in PRETRAINED_LABELS and net.test_accuracy is not None:
            facts[f"{key}.accuracy"] = f"{net.test_accuracy:.2%}"
    facts.update(own_model_facts())
    try:
        linear = pretrained("linear")
        facts["linear.accuracy"] = f"{linear.info.test_accuracy:.2%}"
        facts["linear.params"] = f"{sum(p.numel() for p in linear.model.parameters()):,}"
    except DigitrecError:
        pass  # the baseline's checkpoint is missing: a lesson naming it shows the unknown placeholder
    if names is None or any(name.startswith("bp.") for name in names):
        facts.update(_backprop_lesson_facts(digit))
    # The lab's numbers cost training runs (seconds): measured once per server, for lessons that name them.
    if names is not None and any(name.startswith(LAB_FACT_PREFIX) for name in names):
        facts.update(_lab_facts_cached())
    groups = set(DATASET_FACT_GROUPS) if names is None else fact_groups(names)
    if groups and mnist() is not None:
        for group in sorted(groups):
            facts.update(_dataset_facts_cached(group))
    return facts


def own_network() -> Network | None:
    """The learner's own model the lessons talk about (imported or sent from a notebook): the picked
    network if it is one, else the latest; None when the session has none."""
    own = [n for n in networks().values() if isinstance(n.config, models.ModelSpec)]
    picked = st.session_state.get(NET_KEY)
    return next((n for n in own if n.key == picked), own[-1] if own else None)


def own_model_facts() -> dict[str, str]:
    """``{{ mine.… }}``: ``digitrec.lessons.own_model_facts`` of ``own_network()``, counted once per model."""
    from digitrec import lessons

    net = own_network()
    if net is None:
        return lessons.own_model_facts()
    name = net.label.split(" (")[0]  # "mine: NAME", without the accuracy the picker adds

    def facts() -> dict[str, str]:
        from digitrec import config, train

        seen = require_mnist().train.subset(config.OWN_MODEL_TRAIN_DIGITS)
        return lessons.own_model_facts(name, net.model, net.test_accuracy, train.evaluate(net.model, seen)[1])

    return model_result(net, ("lesson facts", name), facts)


@st.cache_resource(show_spinner="Measuring the networks on the MNIST digits (once)…")
def _dataset_facts_cached(group: str) -> dict[str, str]:
    from digitrec.lessons import dataset_facts, relu_facts, unit_facts

    nets = {k: pretrained(k).model for k in PRETRAINED_LABELS}
    if group == "relu":  # the CNN overview's dead maps and the unit pages read the same measurement
        return relu_facts(nets, mnist(), {k: relu_statistics(pretrained_network(k)) for k in PRETRAINED_LABELS})
    if group == "units":  # the units the unit widgets' pick= shows, from the same statistics
        return unit_facts(nets, mnist(), {k: _unit_statistics(pretrained_network(k)) for k in PRETRAINED_LABELS})
    return dataset_facts(nets, mnist(), [group])


def _backprop_lesson_facts(digit: "Digit") -> dict[str, str]:
    """``{{ bp.… }}``: the pretrained networks' backward pass for the digit and its right answer (cached)."""
    from digitrec.lessons import backprop_facts

    passes = {}
    for key, net in networks().items():
        if key in PRETRAINED_LABELS:
            target = digit.label if digit.label is not None else backward_pass(net, digit, 0).predicted
            passes[key] = backward_pass(net, digit, target)
    return backprop_facts(passes)


@st.cache_resource
def _model_facts_cached() -> dict[str, str]:
    from digitrec.lessons import model_facts

    return model_facts({k: pretrained(k).model for k in PRETRAINED_LABELS})


def query_int(name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    """A whole number from the URL (``?step=4``), clamped to [low, high]; ``default`` if absent or not a number."""
    try:
        value = int(str(st.query_params.get(name, default)).strip())
    except ValueError:  # "abc", "", "²" (isdigit() says yes, int() says no)
        value = default
    if low is not None:
        value = max(low, value)
    if high is not None:
        value = min(high, value)
    return value


def sync_url() -> None:
    """Keep ``?digit=`` and ``?net=`` in the URL on every page (st.navigation drops them on a page switch).

    A ``?net=`` that differs from the session's choice came with a link (st.page_link's query, the browser's
    back button): a sidebar switch drops the query and a picker writes both, so the link's network wins.
    """
    linked = st.query_params.get("net")
    if linked and linked != st.session_state.get(NET_KEY) and linked in networks():
        set_network(linked)
    digit = current_digit()
    if st.query_params.get("digit") != digit.ref:
        st.query_params["digit"] = digit.ref
    net = st.session_state.get(NET_KEY)
    if net and st.query_params.get("net") != net:
        st.query_params["net"] = net


# ---------------------------------------------------------------- Draw & predict page (draw.py)
# The drawing or upload a digit was made from, so the preprocessing steps
# (widgets/preprocess_view.py) can be shown for it on any page.

SOURCE_IMAGE_KEY = "_source_image"  # session_state key: (digit ref, the image it was made from)


def remember_source_image(digit: Digit, image) -> None:
    """Keep the image (H, W[, C]) a drawn or uploaded ``digit`` was made from; only the latest."""
    st.session_state[SOURCE_IMAGE_KEY] = (digit.ref, image)


def source_image(digit: Digit):
    """The image ``digit`` was made from if it was drawn or uploaded in this session, else None."""
    ref, image = st.session_state.get(SOURCE_IMAGE_KEY, (None, None))
    return image if ref == digit.ref else None


def mnist_missing_message() -> str:
    """What to do to get MNIST, when ``mnist()`` is None (empty when it is loaded)."""
    return _mnist()[1]


# ---------------------------------------------------------------- What made it say that? (attributions.py)
# Attribution maps, cached per (network, digit pixels, method, target) so a
# rerun (a click elsewhere on the page) never recomputes them. Pretrained
# networks share one server-wide cache; a network trained or uploaded in this
# session gets a per-session cache that is dropped when its model changes.

_ATTRIBUTION_CACHE_KEY = "_attribution_cache"  # session_state key: {net key: (model, {args: result})}


@st.cache_resource(show_spinner="Re-initialising the weights for the sanity check…")
def _randomized_pretrained(key: str) -> nn.Module:
    from digitrec.attribution import randomized_copy

    return randomized_copy(pretrained(key).model, seed=0)


@st.cache_data(show_spinner=False, max_entries=2000)
def _pretrained_attribution(key: str, pixels: bytes, method: str, target: int | None, randomized: bool, _x: torch.Tensor):
    # pixels (the digit's exact float32 bytes) is the cache key; _x is the same digit, unhashed.
    from digitrec import attribution

    model = _randomized_pretrained(key) if randomized else pretrained(key).model
    if target is None:
        return attribution.all_classes(model, _x, method)
    return attribution.attribute(model, _x, target, method)


def _my_attribution(net: Network, digit: Digit, method: str, target: int | None, randomized: bool):
    from digitrec import attribution

    caches = st.session_state.setdefault(_ATTRIBUTION_CACHE_KEY, {})
    model, cache = caches.get(net.key, (None, None))
    if model is not net.model or len(cache) > 500:  # retrained or replaced: old maps are wrong
        cache = {}
        caches[net.key] = (net.model, cache)
    args = (digit.x.numpy().tobytes(), method, target, randomized)
    if args not in cache:
        if randomized:
            if "randomized" not in cache:  # setdefault would build the copy on every call
                cache["randomized"] = attribution.randomized_copy(net.model, seed=0)
            model = cache["randomized"]
        else:
            model = net.model
        cache[args] = (
            attribution.all_classes(model, digit.x, method) if target is None
            else attribution.attribute(model, digit.x, target, method)
        )
    return cache[args]


def attribution_map(net: Network, digit: Digit, method: str, target: int, randomized: bool = False):
    """``digitrec.attribution.attribute(net.model, digit.x, target, method)``, cached.

    randomized: the same map for a copy of the network with re-initialised
    weights (``attribution.randomized_copy(seed=0)``), for the sanity check.
    Raises UnsupportedAttribution (a DigitrecError) as ``attribute`` does.
    """
    if net.key in PRETRAINED_LABELS:
        return _pretrained_attribution(net.key, digit.x.numpy().tobytes(), method, int(target), randomized, digit.x)
    return _my_attribution(net, digit, method, int(target), randomized)


def attribution_all_classes(net: Network, digit: Digit, method: str) -> list:
    """``digitrec.attribution.all_classes(net.model, digit.x, method)``: ten maps in class order, cached."""
    with st.spinner(f"Attributing all ten classes for {net.label}…"):
        if net.key in PRETRAINED_LABELS:
            return _pretrained_attribution(net.key, digit.x.numpy().tobytes(), method, None, False, digit.x)
        return _my_attribution(net, digit, method, None, False)


# ---------------------------------------------------------------- Lessons page (lessons.py)
# The course from digitrec.lessons.lessons_dir() ($DIGITREC_LESSONS or lessons/),
# parsed once per folder and re-read when a file in it changes, so a teacher
# sees an edit on the next click without restarting the app.


def course() -> list:
    """Every lesson, in number order; raises digitrec.lessons.LessonError for a malformed file."""
    from digitrec.lessons import lessons_dir

    folder = lessons_dir()
    stamp = tuple((p.name, _mtime_ns(p)) for p in sorted(folder.glob("*.md")))
    return _course(str(folder), stamp)


def _mtime_ns(path) -> int:
    """When ``path`` (or, for a link, its target) last changed; a broken link counts by itself."""
    try:
        return path.stat().st_mtime_ns
    except OSError:  # a link to nothing: load_lessons says so on the page
        return path.lstat().st_mtime_ns


@st.cache_resource(show_spinner=False, max_entries=8)
def _course(folder: str, stamp: tuple) -> list:  # stamp: only part of the cache key
    from digitrec.lessons import load_lessons

    return load_lessons(folder)


# A learner's progress through the course, kept in their session: the seed that
# orders each question's options, their first answer to each question (the
# score counts first answers only, so trying every option does not score), and
# the predictions they committed to.
COURSE_SEED_KEY = "_course_seed"  # session_state key: str, drawn once per session
FIRST_ANSWERS_KEY = "_first_answers"  # session_state key: {lesson number: {question key: right?}}
PREDICTIONS_KEY = "_predictions"  # session_state key: {block key: the committed value}


def course_seed() -> str:
    """This session's seed for shuffling answer options (the same on every rerun)."""
    if COURSE_SEED_KEY not in st.session_state:
        import secrets

        st.session_state[COURSE_SEED_KEY] = secrets.token_hex(8)
    return st.session_state[COURSE_SEED_KEY]


def record_answer(lesson: int, question_key: str, correct: bool) -> None:
    """Remember the learner's first answer to a question; later answers do not change the score."""
    st.session_state.setdefault(FIRST_ANSWERS_KEY, {}).setdefault(lesson, {}).setdefault(question_key, correct)


def lesson_score(lesson: int) -> tuple[int, int]:
    """(questions right at the first try, questions answered) in one lesson, this session."""
    answers = st.session_state.get(FIRST_ANSWERS_KEY, {}).get(lesson, {})
    return sum(answers.values()), len(answers)


def committed_prediction(block_key: str):
    """The value the learner committed to for a "predict" block, or None before they commit."""
    return st.session_state.get(PREDICTIONS_KEY, {}).get(block_key)


def commit_prediction(block_key: str, value) -> None:
    st.session_state.setdefault(PREDICTIONS_KEY, {})[block_key] = value


# ---------------------------------------------------------------- Train and race pages (train.py, race.py)
# A training run (a digitrec.engines run handle, or a Race) belongs to the browser
# session that started it: it lives in that session's st.session_state, so two
# learners never see or steer each other's runs, and moving to another page and
# back finds the same run (its worker process keeps going) instead of starting another.
RUNS_KEY = "training_runs"  # session_state key: {slot: run}; a slot is "train", "race" or a widget key
MY_MODEL_COUNT_KEY = "_my_model_count"


def session_id() -> str | None:
    """This browser session's id (None outside a script run)."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None else None


def training_run(slot: str):
    """This session's run in ``slot`` (a run handle or a Race), or None."""
    return st.session_state.get(RUNS_KEY, {}).get(slot)


def set_training_run(slot: str, run) -> None:
    """Keep ``run`` in ``slot``, stopping the run it replaces (so no worker is left unwatched).

    The run is also registered under this session, so it ends with the session.
    """
    runs = st.session_state.setdefault(RUNS_KEY, {})
    old = runs.get(slot)
    if old is not None and old is not run:
        old.stop()
    runs[slot] = run
    if session_id() is not None:
        session_tracker().add(session_id(), run)


def new_my_model_key() -> str:
    """A key never used before in this session ("my-1", "my-2", …): per-key caches never go stale."""
    n = st.session_state.get(MY_MODEL_COUNT_KEY, 0) + 1
    st.session_state[MY_MODEL_COUNT_KEY] = n
    return f"my-{n}"


# ---------------------------------------------------------------- the race's "scale the task" panel
# Measured once per server and channel count (tens of seconds of timing on a busy machine), in a
# process of its own so no page waits on it, then shared by every session.
_SCALE: dict[int, list] = {}
_SCALE_JOBS: dict[int, concurrent.futures.Future] = {}
_SCALE_FAILED: dict[int, str] = {}
_scale_pool: concurrent.futures.ProcessPoolExecutor | None = None
_scale_lock = threading.Lock()


def scale_measured(channels: int):
    """The rows measured for ``channels``, or None while not measured (or still measuring)."""
    global _scale_pool
    with _scale_lock:
        job = _SCALE_JOBS.get(channels)
        if channels not in _SCALE and job is not None and job.done():
            del _SCALE_JOBS[channels]
            try:
                _SCALE[channels] = job.result()
            except Exception as e:  # noqa: BLE001 - a dead measuring process: say so, let them retry
                _SCALE_FAILED[channels] = f"{type(e).__name__}: {e}"
            if not _SCALE_JOBS and _scale_pool is not None:  # nothing left to time: no idle process kept
                _scale_pool.shutdown(wait=False)
                _scale_pool = None
        return _SCALE.get(channels)


def scale_measuring(channels: int) -> bool:
    with _scale_lock:
        return channels in _SCALE_JOBS


def scale_failure(channels: int) -> str | None:
    """Why the last measurement for ``channels`` stopped, if it did."""
    return _SCALE_FAILED.get(channels)


def start_scale_measure(channels: int) -> None:
    """Start measuring ``channels`` in the background (once: a second press while it runs does nothing)."""
    global _scale_pool
    from digitrec import scale
    from digitrec.engines.local import run_threads, worker_context

    def fresh_pool():  # one process, started as training workers are (engines.local.worker_context)
        return concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=worker_context())

    with _scale_lock:
        if channels in _SCALE or channels in _SCALE_JOBS:
            return
        _SCALE_FAILED.pop(channels, None)
        if _scale_pool is None:
            _scale_pool = fresh_pool()
        try:
            _SCALE_JOBS[channels] = _scale_pool.submit(scale.measure_alone, channels, run_threads())
        except BrokenProcessPool:  # its process died earlier: a fresh pool
            _scale_pool = fresh_pool()
            _SCALE_JOBS[channels] = _scale_pool.submit(scale.measure_alone, channels, run_threads())


# ---------------------------------------------------------------- sessions that end
# A class closes thirty tabs at the end of a lesson. Streamlit keeps a closed tab's
# session for server.disconnectedSessionTTL seconds (so a reconnect after a network
# blip finds it), and after that only drops it lazily, never stopping what it started.
# So every session and every run it starts is registered with the server's one
# SessionTracker (digitrec.engines.sessions, streamlit-free); its janitor ends a
# session once it has been without a browser for that long: its runs are closed
# (worker processes or Ray actors gone), its own networks, uploads and caches dropped.

# session_state keys of what a session holds that an ended session must let go of.
_HELD_KEYS = (MY_MODELS_KEY, _MY_MODEL_DIGESTS_KEY, "_test_probabilities", _ATTRIBUTION_CACHE_KEY, SOURCE_IMAGE_KEY,
              "_model_results", "_snapshot_networks")  # (the last two: _MODEL_RESULTS_KEY and SNAPSHOT_NETS_KEY,
# defined further down)


_tracker = None
_tracker_lock = threading.Lock()


def session_tracker():
    """The server's one session tracker (made on first use); its grace is the reconnect window
    (server.disconnectedSessionTTL). A module global, not st.cache_resource: the janitor thread reads it too."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            from streamlit import config as st_config

            from digitrec.engines.sessions import SessionTracker

            _tracker = SessionTracker(grace_s=float(st_config.get_option("server.disconnectedSessionTTL")))
        return _tracker


def track_session() -> None:
    """Note that this session is alive (called by app.py on every run); starts the janitor once."""
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    if ctx is None or not runtime.exists():  # AppTest, or a bare import: nothing can end
        return
    _return_large_blocks()
    tracker = session_tracker()
    sid, session_state = ctx.session_id, ctx.session_state
    tracker.track(sid, release=lambda: _release_ended(sid, session_state))
    tracker.start_janitor(runtime.get_instance().is_active_session, after=_after_release)


@functools.cache
def _return_large_blocks() -> None:
    """Once per server (a real one: AppTest's pytest process keeps its own malloc): what an ended session
    frees leaves the process (digitrec.allocator.return_large_blocks)."""
    from digitrec.allocator import return_large_blocks

    return_large_blocks()


def tracked_sessions() -> int:
    """How many sessions this server process holds resources for (for tests and the load test)."""
    return len(session_tracker().sessions())


def release_session(session_state) -> None:
    """Let go of everything a session that has ended held. ``session_state`` is its
    st.session_state (any mapping); safe to call twice.

    Training runs: each run in RUNS_KEY gets ``run.stop()`` and is dropped (the tracker
    has already closed the runs it was told about; this catches any other).
    """
    runs = session_state[RUNS_KEY] if RUNS_KEY in session_state else {}  # (SafeSessionState has no .get)
    for run in list(runs.values()):
        try:
            run.stop()
        except Exception:  # noqa: BLE001 - one broken run must not keep the others going
            pass
    for key in (RUNS_KEY, *_HELD_KEYS):
        if key in session_state:
            del session_state[key]
    # A file uploader's value is the uploaded file itself (an in-memory copy of its bytes).
    from streamlit.runtime.uploaded_file_manager import UploadedFile

    state = session_state.filtered_state if hasattr(session_state, "filtered_state") else dict(session_state)
    for key, value in list(state.items()):
        files = value if isinstance(value, list) else [value]
        if any(isinstance(f, UploadedFile) for f in files):
            try:
                del session_state[key]
            except (KeyError, AttributeError):  # a widget Streamlit will not let go of: it goes with the session
                pass


def _release_ended(sid: str, session_state) -> None:
    """The tracker's release callback for one ended session (its runs are closed by then)."""
    from streamlit import runtime

    release_session(session_state)
    if runtime.exists():
        runtime.get_instance().uploaded_file_mgr.remove_session_files(sid)  # Streamlit only does so on a close


def _after_release(session_ids: list[str]) -> None:
    """After the janitor ended sessions (their runs closed, each run's reader thread gone with what it
    held: engines.local.WorkerRun.close): hand their memory back and log what the server still runs."""
    import gc

    gc.collect()
    _return_freed_memory()
    _log_release(session_ids)


def _run_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("digitrec-run")]


def _log_release(session_ids: list[str]) -> None:
    """A line in $DIGITREC_TIMING_LOG saying what the server still runs after a release."""
    import json
    import os

    path = os.environ.get(TIMING_LOG_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps({"released": session_ids, "pid": os.getpid(), "tracked_sessions": tracked_sessions(),
                            "run_threads": _run_threads(), "threads": threading.active_count()}) + "\n")


def _return_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so a server's
    memory falls again after a class leaves."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused, just not returned
        pass


# ---------------------------------------------------------------- timing (the load test reads it)

TIMING_LOG_ENV = "DIGITREC_TIMING_LOG"  # a file: one JSON line per script run, when set


class page_timing:
    """``with page_timing(page): page.run()`` appends {page, seconds, session, pretrained hash}
    to $DIGITREC_TIMING_LOG: the server's own time per page, apart from the browsers' time,
    and proof that no session changed the shared pretrained models. Off when unset."""

    def __init__(self, page_name: str) -> None:
        import os
        import time

        self.path = os.environ.get(TIMING_LOG_ENV)
        self.page = page_name
        self.start = time.perf_counter()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:  # also on st.rerun()/st.stop(), which leave by an exception
        if not self.path:
            return
        import json
        import os
        import time

        from streamlit.runtime.scriptrunner import get_script_run_ctx

        seconds = time.perf_counter() - self.start
        ctx = get_script_run_ctx()
        line = json.dumps({
            "page": self.page, "seconds": round(seconds, 4), "pid": os.getpid(),
            "session": ctx.session_id if ctx else None, "pretrained": pretrained_hashes(),
            "stopped": exc[0].__name__ if exc[0] else None,
        })
        with open(self.path, "a") as f:  # one short write per line: lines of replicas do not interleave
            f.write(line + "\n")


def pretrained_hashes() -> dict[str, str]:
    """sha256 of each cached pretrained model's parameters, as the server holds them now."""
    out = {}
    for key in PRETRAINED_LABELS:
        try:
            model = pretrained(key).model
        except DigitrecError:
            continue
        h = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        out[key] = h.hexdigest()[:16]
    return out


# ---------------------------------------------------------------- units, the Map, Break it (unit.py, map.py, break_it.py)
# Per-model results (top-k statistics over the test set, maps, fooling transfer
# rates) are computed once: server-wide for the pretrained networks, per
# session for a learner's own model, keyed by the model object so a retrained
# or changed model never shows an old model's numbers. A lock per result
# stops two sessions building the same slow UMAP at once.

_MODEL_RESULTS_KEY = "_model_results"  # session_state key: {net key: (model, {what: result})}
CHANGES_KEY = "_unit_changes"  # session_state key: {base net key: [intervention.Change, ...]}
CHANGED_PREFIX = "changed-"  # a changed copy's network key: "changed-fc"


@st.cache_resource
def _server_results() -> tuple[dict, dict]:
    import collections
    import threading

    return {}, collections.defaultdict(threading.Lock)


def model_result(net: Network, what: tuple, compute):
    """``compute()`` for ``net``, once: per server for a pretrained network, per session (and model) otherwise."""
    if net.key in PRETRAINED_LABELS:
        store, locks = _server_results()
        key = (net.key, *what)
        if key not in store:
            with locks[key]:
                if key not in store:
                    store[key] = compute()
        return store[key]
    caches = st.session_state.setdefault(_MODEL_RESULTS_KEY, {})
    model, store = caches.get(net.key, (None, None))
    if model is not net.model:  # retrained, replaced or changed: every old result is wrong
        store = {}
        caches[net.key] = (net.model, store)
    if what not in store:
        store[what] = compute()
    return store[what]


def _unit_statistics(net: Network) -> dict:
    from digitrec import units

    return model_result(net, ("unit statistics",), lambda: units.statistics(net.model, require_mnist().test))


def unit_statistics(net: Network) -> dict:
    """``digitrec.units.statistics`` of ``net`` over the 10,000 test digits: the one pass per model that the unit
    pages, the dead-unit marks and the lessons' ReLU numbers all read."""
    with st.spinner("Running the 10,000 test digits through the network once…"):
        return _unit_statistics(net)


def relu_statistics(net: Network) -> dict | None:
    """``digitrec.units.relu_statistics`` of ``net``: zero fractions and dead units per ReLU layer; None without MNIST.

    Derived from ``unit_statistics`` (measured once per pretrained network per server, once per own model per
    session). No spinner: lesson facts call it from inside a cached function.
    """
    from digitrec import units

    if mnist() is None:
        return None
    return model_result(net, ("relu statistics",), lambda: units.relu_statistics(_unit_statistics(net)))


SNAPSHOT_NETS_KEY = "_snapshot_networks"  # session_state key: {"my-1@120": (the run's model, Network at step 120)}


def training_snapshots(net: Network) -> list:
    """The snapshots of ``net``'s training run that kept the whole network's weights (empty for other networks)."""
    return [s for s in net.snapshots if s.weights is not None]


def snapshot_network(net: Network, snapshot) -> Network:
    """``net`` as it was at one snapshot of its run, built once per session; its statistics, pull and best
    picture are then cached per (run, snapshot) by ``model_result`` like any network's."""
    from digitrec import runs

    key = f"{net.key}@{snapshot.step}"
    nets = st.session_state.setdefault(SNAPSHOT_NETS_KEY, {})
    made_from, at = nets.get(key, (None, None))
    if made_from is not net.model:  # first visit, or the network was replaced since
        at = Network(key, f"{net.label} at step {snapshot.step:,}", runs.model_at(net.model, snapshot), net.config,
                     snapshot.val_accuracy)
        nets[key] = (net.model, at)
    return at


def dead_units(net: Network) -> dict:
    """``digitrec.units.dead_units`` of ``net`` over the test digits: layer -> dead unit indices."""
    from digitrec import units

    stats = unit_statistics(net)
    return model_result(net, ("dead units",), lambda: units.dead_units(stats))


def changes(base: Network) -> list:
    """The interventions made on ``base`` in this session (empty when none)."""
    return list(st.session_state.get(CHANGES_KEY, {}).get(base.key, []))


def base_network(net: Network) -> Network:
    """The original network behind a changed copy (itself when it is not one)."""
    if net.key.startswith(CHANGED_PREFIX):
        return networks().get(net.key[len(CHANGED_PREFIX):], net)
    return net


def set_changes(base: Network, new_changes: list, check: torch.Tensor) -> Network | None:
    """Make the session's changed copy of ``base`` (raises intervention.BadChange, keeping the old one);
    an empty list removes the copy (Reset). The shared ``base.model`` is never modified."""
    from digitrec import intervention, models as model_lib

    key = CHANGED_PREFIX + base.key
    if not new_changes:
        st.session_state.get(CHANGES_KEY, {}).pop(base.key, None)
        st.session_state.get(MY_MODELS_KEY, {}).pop(key, None)
        if st.session_state.get(NET_KEY) == key:
            set_network(base.key)
        return None
    changed = intervention.apply(base.model, new_changes, check=check)
    st.session_state.setdefault(CHANGES_KEY, {})[base.key] = list(new_changes)
    label = f"{model_lib.display_name(base.config)} (changed: {len(new_changes)})"
    return add_my_model(key, label, changed, None)


def map_features(net: Network) -> dict:
    """layer -> (10000, D) features of the test digits at every map layer of ``net`` (one batched pass)."""
    from digitrec import embedding

    with st.spinner("Running the 10,000 test digits through the network…"):
        return model_result(net, ("map features",), lambda: embedding.representations(
            net.model, require_mnist().test.images, embedding.map_layers(net.model)))


def digit_map(net: Network, layer: str, method: str):
    """``embedding.fit_pca`` / ``fit_umap`` of one layer of ``net``, built once (UMAP: on the first UMAP_POINTS digits)."""
    from digitrec import embedding

    features = map_features(net)[layer]
    if method == "PCA":
        return model_result(net, ("map", layer, method), lambda: embedding.fit_pca(layer, features))
    with st.spinner(f"Building the UMAP map of {embedding.UMAP_POINTS:,} digits (once per network and layer; "
                    "the very first one also compiles UMAP's code, up to a minute)…"):
        return model_result(net, ("map", layer, method),
                            lambda: embedding.fit_umap(layer, features[: embedding.UMAP_POINTS]))


def neighbour_features(net: Network) -> dict:
    """layer -> (NEIGHBOUR_POOL, D) features of the training digits a placed digit's neighbours come from."""
    from digitrec import embedding

    return model_result(net, ("neighbour features",), lambda: embedding.representations(
        net.model, embedding.pool_images(require_mnist().train), embedding.map_layers(net.model)))


# ---------------------------------------------------------------- lesson 6: the loss along one weight


@st.cache_resource(show_spinner=False)
def loss_slice_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """``landscape.slice_digits`` of the training digits, made once per server."""
    from digitrec import landscape

    return landscape.slice_digits(require_mnist().train)


@st.cache_resource(show_spinner="Finding the weight with the narrowest valley…", max_entries=64)
def pretrained_narrowest_weight(layer: str, row: int):
    """``digitrec.landscape.narrowest_weight`` of the pretrained FCNet's neuron ``row``, found once per server."""
    from digitrec import landscape

    x, y = loss_slice_digits()
    return landscape.narrowest_weight(pretrained("fc").model, layer, row, x, y)


@st.cache_resource(show_spinner="Measuring the loss along this weight…", max_entries=64)
def pretrained_loss_slice(layer: str, row: int, col: int):
    """``digitrec.landscape.loss_slice`` of the pretrained FCNet along one weight, computed once per server."""
    from digitrec import landscape

    x, y = loss_slice_digits()
    return landscape.loss_slice(pretrained("fc").model, landscape.WeightRef(layer, row, col), x, y)

# ---------------------------------------------------------------- backpropagation (widgets/backprop.py)
# One forward + backward pass per (network, digit, target class), kept so that a
# rerun (a slider elsewhere on the page) never recomputes it. Pretrained networks
# share a server-wide cache; a network of this session gets a per-session cache
# that is dropped when its model object changes (retrained or replaced).

BACKPROP_TARGET_KEY = "backprop_target"  # session_state key: (digit ref, target class) the backprop widgets share
_BACKPROP_CACHE_KEY = "_backprop_cache"  # session_state key: {net key: (model, {args: result})}
OVERSHOOT_DIGITS = 500  # test digits that show what a step made for one digit does to the others


def _compute_backprop(model: nn.Module, x: torch.Tensor, what: str, args: tuple):
    from digitrec import backprop

    bw = backprop.backward(model, x, args[0])
    if what == "backward":
        return bw
    images, labels, _ = overshoot_digits()  # what == "curve": args = (target, lrs)
    return backprop.loss_along_gradient(model, x, bw, args[1], images, labels)


@st.cache_resource(show_spinner=False, max_entries=64)  # a TinyVGG pass holds ~1 MB of maps
def _pretrained_backprop(key: str, pixels: bytes, what: str, args: tuple, _x: torch.Tensor):
    # pixels (the digit's exact float32 bytes) is the cache key; _x is the same digit, unhashed.
    return _compute_backprop(pretrained(key).model, _x, what, args)


def _backprop_cached(net: Network, digit: Digit, what: str, args: tuple):
    pixels = digit.x.numpy().tobytes()
    if net.key in PRETRAINED_LABELS:
        return _pretrained_backprop(net.key, pixels, what, args, digit.x)
    caches = st.session_state.setdefault(_BACKPROP_CACHE_KEY, {})
    model, cache = caches.get(net.key, (None, None))
    if model is not net.model or len(cache) > 200:  # retrained or replaced: old gradients are wrong
        cache = {}
        caches[net.key] = (net.model, cache)
    if (pixels, what, args) not in cache:
        cache[(pixels, what, args)] = _compute_backprop(net.model, digit.x, what, args)
    return cache[(pixels, what, args)]


def backward_pass(net: Network, digit: Digit, target: int):
    """``digitrec.backprop.backward(net.model, digit.x, target)``: one forward + backward pass, cached."""
    return _backprop_cached(net, digit, "backward", (int(target),))


def loss_curve(net: Network, digit: Digit, target: int, lrs: tuple[float, ...]):
    """``backprop.loss_along_gradient`` for this digit and the overshoot digits, cached per learning-rate grid."""
    return _backprop_cached(net, digit, "curve", (int(target), tuple(float(v) for v in lrs)))


@st.cache_resource(show_spinner=False)
def _overshoot_digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    dataset = mnist()
    if dataset is not None:
        images = dataset.test.images[:OVERSHOOT_DIGITS].float().div(255.0).unsqueeze(1)  # (N, 1, 28, 28)
        return images, dataset.test.labels[:OVERSHOOT_DIGITS].long(), f"the first {OVERSHOOT_DIGITS} test digits"
    images = torch.stack([samples.sample_digit(d) for d in range(10)]).unsqueeze(1)  # no MNIST: the ten samples
    return images, torch.arange(10), "the ten sample digits"


def overshoot_digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images (N, 1, 28, 28), labels (N,), what they are): the digits a one-digit step is checked on."""
    return _overshoot_digits()


def backprop_target(digit: Digit) -> int | None:
    """The target class the backprop widgets share for ``digit``; None until one is set for this digit."""
    ref, target = st.session_state.get(BACKPROP_TARGET_KEY, (None, None))
    return int(target) if ref == digit.ref else None


def set_backprop_target(digit: Digit, target: int) -> None:
    st.session_state[BACKPROP_TARGET_KEY] = (digit.ref, int(target))
