"""Property tests (hypothesis) of everything that reads what a stranger gives us.

Any input gives a valid result or the module's own error (a DigitrecError with a
sentence), never another exception, within a time limit (``deadline``) and with
bounded memory. The example budgets are fixed and the database is off, so
``make test`` runs the same number of cases every time (derandomize: the same cases).

Still to come: the state-dict importer (``digitrec.importer``, the own-model issue)
gets the same property when it lands: any bytes -> a specification or ImportError_.
"""

from __future__ import annotations

import io
import json
import struct
import tracemalloc

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitrec import checkpoints, models, preprocess
from digitrec.errors import BadImage, CheckpointError, DigitrecError, EmptyDrawing
from digitrec.lessons import Lesson, LessonError, parse_lesson

from tests.test_lessons import GOOD

# Fixed budgets: the whole file runs in well under a minute on 2 shared cores.
FAST = settings(max_examples=150, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=40, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MEMORY_LIMIT = 64 * 2**20  # peak per call of what tracemalloc sees (Python objects and numpy arrays)


def _peak(fn, *args):
    """(result or exception, peak traced bytes) of fn(*args)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as e:  # noqa: BLE001 - returned, then checked by the caller
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------- images


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@st.composite
def image_files(draw) -> bytes:
    """Real image files of odd sizes and contents, then damaged by cuts and flipped bytes."""
    h = draw(st.integers(1, 64))
    w = draw(st.integers(1, 64))
    channels = draw(st.sampled_from([None, 3, 4]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"]))
    if fmt in ("JPEG",) and channels == 4:
        channels = 3
    shape = (h, w) if channels is None else (h, w, channels)
    seed = draw(st.integers(0, 2**32 - 1))
    arr = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    data = bytearray(_encoded(arr, fmt))
    for _ in range(draw(st.integers(0, 3))):  # flip a few bytes
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[: max(cut, draw(st.integers(0, len(data))))])


def _check_image_result(out) -> None:
    if isinstance(out, Exception):
        assert isinstance(out, BadImage), repr(out)
        assert str(out).endswith("."), str(out)
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    assert out.ndim == 2 or (out.ndim == 3 and out.shape[2] in (3, 4))
    assert max(out.shape[:2]) <= preprocess.WORK_SIDE


@FAST
@given(st.binary(max_size=4096))
def test_load_image_of_any_bytes_gives_an_image_or_bad_image(data):
    out, peak = _peak(preprocess.load_image, data)
    _check_image_result(out)
    assert peak < MEMORY_LIMIT


@FAST
@given(image_files())
def test_load_image_of_damaged_image_files_gives_an_image_or_bad_image(data):
    out, peak = _peak(preprocess.load_image, data)
    _check_image_result(out)
    assert peak < MEMORY_LIMIT


@st.composite
def arrays(draw) -> np.ndarray:
    """Arrays of any small shape and dtype, with NaN, infinities and extremes among the values."""
    ndim = draw(st.integers(1, 4))
    shape = tuple(draw(st.integers(0, 40)) for _ in range(ndim))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int32, np.int64, np.float32, np.float64, np.bool_]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "blank", "stroke", "extremes"]))
    if kind == "noise":
        arr = rng.random(shape) * draw(st.sampled_from([1.0, 255.0, 65535.0, 1e30]))
    elif kind == "blank":
        arr = np.full(shape, draw(st.floats(allow_nan=True, allow_infinity=True)))
    elif kind == "stroke":
        arr = np.zeros(shape)
        if ndim >= 2 and shape[0] > 2 and shape[1] > 2:
            arr[shape[0] // 4 : 3 * shape[0] // 4, shape[1] // 2] = 255
    else:
        arr = rng.choice(np.array([np.nan, np.inf, -np.inf, -1.0, 0.0, 1.0, 255.0, 1e300]), size=shape)
    with np.errstate(all="ignore"):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            arr = np.nan_to_num(arr, nan=0, posinf=info.max, neginf=info.min).clip(info.min, info.max)
        return arr.astype(dtype)


@FAST
@given(arrays())
def test_to_mnist_of_any_array_gives_a_digit_or_its_own_error(arr):
    try:
        digit = preprocess.to_mnist(arr)
    except (BadImage, EmptyDrawing) as e:
        assert str(e)
        return
    assert digit.shape == (28, 28) and digit.dtype == torch.float32
    assert torch.isfinite(digit).all() and 0.0 <= float(digit.min()) and float(digit.max()) <= 1.0


# ---------------------------------------------------------------- checkpoints


_VALID = checkpoints.to_bytes(models.build(models.FCConfig(hidden=(4,)), seed=0), test_accuracy=0.5, epochs=1, seed=0)
_HEADER_LEN = struct.unpack("<Q", _VALID[:8])[0]
checkpoints.load_bytes(_VALID)  # warm the one-off costs (rendering the sample digits) outside the deadline


def _check_checkpoint_result(out) -> None:
    if isinstance(out, Exception):
        assert isinstance(out, CheckpointError), repr(out)
        assert str(out)
        return
    assert isinstance(out, checkpoints.Checkpoint)
    with torch.inference_mode():
        assert torch.isfinite(out.model(torch.rand(2, 1, 28, 28))).all()


@SLOW
@given(st.binary(max_size=2048))
def test_load_bytes_of_any_bytes_gives_a_checkpoint_or_checkpoint_error(data):
    out, peak = _peak(checkpoints.load_bytes, data, "x.safetensors")
    _check_checkpoint_result(out)
    assert peak < MEMORY_LIMIT


@SLOW
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(_VALID)))
def test_load_bytes_of_a_damaged_checkpoint_gives_a_checkpoint_or_checkpoint_error(flips, cut):
    data = bytearray(_VALID)
    for i, b in flips:
        data[i] = b
    out, peak = _peak(checkpoints.load_bytes, bytes(data[:cut] if cut else data), "x.safetensors")
    _check_checkpoint_result(out)
    assert peak < MEMORY_LIMIT


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@SLOW
@given(st.dictionaries(st.sampled_from(["format", "format_version", "architecture", "config", "test_accuracy",
                                        "epochs", "seed", "other"]), _json_values, max_size=8),
       st.dictionaries(st.text(max_size=10), _json_values, max_size=4))
def test_load_bytes_of_a_crafted_header_gives_a_checkpoint_or_checkpoint_error(metadata, entries):
    # The real header's tensors with crafted metadata (values of any JSON type) and extra entries.
    header = json.loads(_VALID[8 : 8 + _HEADER_LEN])
    real_meta = header.pop("__metadata__")
    header.update(entries)
    header["__metadata__"] = {**real_meta, **metadata}
    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + _VALID[8 + _HEADER_LEN :]
    out, peak = _peak(checkpoints.load_bytes, data, "x.safetensors")
    _check_checkpoint_result(out)
    assert peak < MEMORY_LIMIT


# ---------------------------------------------------------------- the lesson parser


def _check_lesson_result(text: str) -> None:
    try:
        lesson = parse_lesson(text, "01-x.md")
    except LessonError as e:
        assert str(e).startswith("01-x.md"), str(e)
        return
    assert isinstance(lesson, Lesson) and lesson.steps


@FAST
@given(st.text(max_size=2000))
def test_parse_lesson_of_any_text_gives_a_lesson_or_lesson_error(text):
    _check_lesson_result(text)


@FAST
@given(st.lists(st.tuples(st.integers(0, len(GOOD)), st.integers(0, len(GOOD)),
                          st.sampled_from(["", "-", ":::", "::: widget ", "::: question\n", "## ", "---\n", "{{",
                                           "}}", "- [x] ", "::", "=", "\n", "\x00", "\ud7ff", "é"])), max_size=5))
def test_parse_lesson_of_a_damaged_lesson_gives_a_lesson_or_lesson_error(edits):
    text = GOOD
    for start, end, insert in edits:
        lo, hi = sorted((min(start, len(text)), min(end, len(text))))
        text = text[:lo] + insert + text[hi:]
    _check_lesson_result(text)


def test_the_budgets_are_fixed():
    # A run of `make test` always runs the same cases in bounded time.
    for budget in (FAST, SLOW):
        assert budget.max_examples <= 150 and budget.deadline is not None and budget.derandomize
    assert issubclass(BadImage, DigitrecError) and issubclass(CheckpointError, DigitrecError)
