"""The course: Markdown lessons parsed into steps, widgets and questions.

A lesson is ``lessons/NN-slug.md``: a front-matter block, then one step per
``## `` heading. Inside a step:

- ``::: widget NAME key=value …`` on its own line embeds a live widget that the
  app owns (the lesson names it; it never carries its own copy);
- ``{{ fc.params }}``-style placeholders are filled from ``digitrec`` at render
  time (see ``model_facts``; training defaults: ``settings_facts``), so no
  number that depends on a model or a setting is typed in;
- a ``::: question`` … ``:::`` block is a check-yourself question: the first
  line is the question, then one ``- [x] answer :: feedback`` line per answer
  (``[x]`` right, ``[ ]`` wrong), at least three answers (no coin flips);
- a ``::: predict`` … ``:::`` block asks the learner to commit to a prediction
  before the rest of the step (the widget that shows the answer) is revealed:
  either a number (an ``answer: {{ placeholder }}`` line, optionally
  ``within: 5`` for how close counts as right) or a choice (answer lines as in
  a question; feedback after ``::`` is optional there).

Front matter (between ``---`` lines): ``title``, ``goal``, ``networks``
(comma separated: fc, cnn), ``minutes``. Anything malformed raises
``LessonError`` with the file and line, so a teacher's typo is reported on the
page and fails the tests instead of rendering wrongly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from digitrec.errors import DigitrecError

LESSONS_DIR = Path(__file__).resolve().parent.parent / "lessons"
# A teacher (or a test) can point the app at another folder of lessons.
LESSONS_ENV = "DIGITREC_LESSONS"
FRONT_MATTER_FIELDS = ("title", "goal", "networks", "minutes")
KNOWN_NETWORKS = ("fc", "cnn")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
_WIDGET = re.compile(r"^:::\s*widget\s+([A-Za-z_][A-Za-z0-9_]*)\s*(.*)$")
_ANSWER = re.compile(r"^-\s*\[( |x|X)\]\s*(.+?)\s*(?:::\s*(.+))?$")
_PREDICT_FIELD = re.compile(r"^(answer|within):\s*(.*)$")
MIN_ANSWERS = 3  # two options are a coin flip, not a question


class LessonError(DigitrecError):
    """A lesson file is malformed; the message names the file and line."""


@dataclass(frozen=True)
class Widget:
    name: str
    params: dict[str, str | int | float | bool]
    line: int


@dataclass(frozen=True)
class Answer:
    text: str
    correct: bool
    feedback: str


@dataclass(frozen=True)
class Question:
    prompt: str
    answers: tuple[Answer, ...]
    line: int


@dataclass(frozen=True)
class Prediction:
    """A "predict, then reveal" block: the rest of its step stays hidden until the learner commits.

    A number prediction has ``answer`` (text, usually a placeholder, filled at render
    time, e.g. "31.2 %") and ``within`` (how far off still counts as close, in the
    answer's unit; None: only the distance is shown). A choice prediction has
    ``answers`` instead.
    """

    prompt: str
    line: int
    answers: tuple[Answer, ...] = ()
    answer: str = ""
    within: float | None = None

    @property
    def is_number(self) -> bool:
        return not self.answers


@dataclass(frozen=True)
class Block:
    """One piece of a step, in order: Markdown text, a widget, a question or a prediction."""

    kind: str  # "text", "widget", "question" or "predict"
    text: str = ""
    widget: Widget | None = None
    question: Question | None = None
    predict: Prediction | None = None


@dataclass(frozen=True)
class Step:
    title: str
    blocks: tuple[Block, ...]

    @property
    def widgets(self) -> list[Widget]:
        return [b.widget for b in self.blocks if b.widget is not None]

    @property
    def questions(self) -> list[Question]:
        return [b.question for b in self.blocks if b.question is not None]

    @property
    def predictions(self) -> list[Prediction]:
        return [b.predict for b in self.blocks if b.predict is not None]


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str  # "09-convolution"
    title: str
    goal: str
    networks: tuple[str, ...]
    minutes: int
    steps: tuple[Step, ...]
    path: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The slug without its number ("convolution"): what links use, so they survive renumbering."""
        return self.slug.split("-", 1)[1]

    @property
    def questions(self) -> list[Question]:
        return [q for step in self.steps for q in step.questions]

    @property
    def placeholders(self) -> set[str]:
        """Every ``{{ name }}`` the lesson uses."""
        names = set()
        for step in self.steps:
            for b in step.blocks:
                names.update(_PLACEHOLDER.findall(b.text))
                if b.question:
                    names.update(_PLACEHOLDER.findall(b.question.prompt))
                    for a in b.question.answers:
                        names.update(_PLACEHOLDER.findall(a.text + " " + a.feedback))
                if b.predict:
                    names.update(_PLACEHOLDER.findall(b.predict.prompt + " " + b.predict.answer))
                    for a in b.predict.answers:
                        names.update(_PLACEHOLDER.findall(a.text + " " + a.feedback))
        names.update(_PLACEHOLDER.findall(self.goal))
        return names


def lessons_dir() -> Path:
    """The folder lessons are read from: ``$DIGITREC_LESSONS`` when set, else the repository's lessons/."""
    folder = os.environ.get(LESSONS_ENV, "").strip()
    return Path(folder).expanduser() if folder else LESSONS_DIR


def _value(raw: str) -> str | int | float | bool:
    if raw.lower() in ("true", "false"):  # so a lesson can switch a widget's option off: my_models=false
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _parse_params(raw: str, where: str) -> dict[str, str | int | float | bool]:
    params = {}
    for token in raw.split():
        name, eq, value = token.partition("=")
        if not eq or not name or not value:
            raise LessonError(f"{where}: widget parameter {token!r} should look like name=value.")
        params[name] = _value(value)
    return params


def parse_lesson(text: str, name: str = "lesson.md") -> Lesson:
    """Parse one lesson file's text. ``name`` is the file name, e.g. "07-convolution.md"."""
    m = re.match(r"^(\d+)-([a-z0-9-]+)\.md$", Path(name).name)
    if not m:
        raise LessonError(f"{name}: a lesson file is named NN-slug.md, e.g. 07-convolution.md.")
    number, slug = int(m.group(1)), Path(name).stem
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise LessonError(f"{name}, line 1: a lesson starts with a front-matter block between two '---' lines.")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise LessonError(f"{name}, line 1: the front-matter block is never closed with '---'.") from None
    meta, meta_line = {}, {}
    for i in range(1, end):
        if not lines[i].strip():
            continue
        key, colon, value = lines[i].partition(":")
        key = key.strip()
        if not colon:
            raise LessonError(f"{name}, line {i + 1}: front matter lines look like 'title: …'.")
        if key not in FRONT_MATTER_FIELDS:  # a typo ("titel") would otherwise vanish silently
            raise LessonError(
                f"{name}, line {i + 1}: unknown front-matter field {key!r}; use {', '.join(FRONT_MATTER_FIELDS)}."
            )
        meta[key], meta_line[key] = value.strip(), i + 1
    missing = [f for f in FRONT_MATTER_FIELDS if not meta.get(f)]
    if missing:
        raise LessonError(f"{name}, line {end + 1}: the front matter lacks {', '.join(missing)}.")
    networks = tuple(n.strip() for n in meta["networks"].split(",") if n.strip())
    if not networks or any(n not in KNOWN_NETWORKS for n in networks):
        raise LessonError(
            f"{name}, line {meta_line['networks']}: networks must be a comma-separated list of "
            f"{', '.join(KNOWN_NETWORKS)}, got {meta['networks']!r}."
        )
    try:
        minutes = int(meta["minutes"])
    except ValueError:
        raise LessonError(
            f"{name}, line {meta_line['minutes']}: minutes must be a whole number, got {meta['minutes']!r}."
        ) from None

    steps: list[Step] = []
    title, blocks, buffer = None, [], []

    def flush_text() -> None:
        if "".join(buffer).strip():
            blocks.append(Block("text", text="\n".join(buffer).strip()))
        buffer.clear()

    def flush_step() -> None:
        flush_text()
        if title is not None:
            steps.append(Step(title, tuple(blocks)))
        blocks.clear()

    i = end + 1
    while i < len(lines):
        line, where = lines[i], f"{name}, line {i + 1}"
        stripped = line.strip()
        if line.startswith("## "):
            flush_step()
            title = line[3:].strip()
        elif stripped.startswith(":::"):
            if title is None:
                raise LessonError(f"{where}: a widget or question must come inside a step (after a '## ' heading).")
            flush_text()
            w = _WIDGET.match(stripped)
            if w:
                blocks.append(Block("widget", widget=Widget(w.group(1), _parse_params(w.group(2), where), i + 1)))
            elif stripped == "::: question":
                i, question = _parse_question(lines, i, name)
                blocks.append(Block("question", question=question))
            elif stripped == "::: predict":
                i, prediction = _parse_prediction(lines, i, name)
                blocks.append(Block("predict", predict=prediction))
            else:
                raise LessonError(
                    f"{where}: unknown directive {stripped!r}; use '::: widget NAME', '::: question' or '::: predict'."
                )
        elif title is None:
            if stripped:
                raise LessonError(f"{where}: text before the first step; start each step with a '## ' heading.")
        else:
            buffer.append(line)
        i += 1
    flush_step()
    if not steps:
        raise LessonError(f"{name}: a lesson needs at least one step (a '## ' heading).")
    return Lesson(number, slug, meta["title"], meta["goal"], networks, minutes, tuple(steps))


def _parse_question(lines: list[str], start: int, name: str) -> tuple[int, Question]:
    """Parse from the '::: question' line; return the index of the closing ':::' and the question."""
    prompt, answers = [], []
    i = start + 1
    while i < len(lines) and lines[i].strip() != ":::":
        line = lines[i].strip()
        a = _ANSWER.match(line)
        if a:
            answers.append(Answer(a.group(2).strip(), a.group(1).lower() == "x", (a.group(3) or "").strip()))
        elif line:
            if answers:
                raise LessonError(f"{name}, line {i + 1}: question text must come before its answers.")
            prompt.append(line)
        i += 1
    if i >= len(lines):
        raise LessonError(f"{name}, line {start + 1}: the question is never closed with ':::'.")
    if not prompt or len(answers) < MIN_ANSWERS:
        raise LessonError(
            f"{name}, line {start + 1}: a question needs its text and at least {MIN_ANSWERS} '- [ ] answer' lines "
            "(two options are a coin flip)."
        )
    if not any(a.correct for a in answers):
        raise LessonError(f"{name}, line {start + 1}: mark the right answer with '- [x]'.")
    if any(not a.feedback for a in answers):
        raise LessonError(f"{name}, line {start + 1}: give every answer feedback after '::'.")
    return i, Question(" ".join(prompt), tuple(answers), start + 1)


def _parse_prediction(lines: list[str], start: int, name: str) -> tuple[int, Prediction]:
    """Parse from the '::: predict' line; return the index of the closing ':::' and the prediction."""
    prompt, answers, fields = [], [], {}
    where = f"{name}, line {start + 1}"
    i = start + 1
    while i < len(lines) and lines[i].strip() != ":::":
        line = lines[i].strip()
        a, f = _ANSWER.match(line), _PREDICT_FIELD.match(line)
        if a:
            answers.append(Answer(a.group(2).strip(), a.group(1).lower() == "x", (a.group(3) or "").strip()))
        elif f:
            fields[f.group(1)] = f.group(2).strip()
        elif line:
            if answers or fields:
                raise LessonError(f"{name}, line {i + 1}: the prediction's text must come before its answers.")
            prompt.append(line)
        i += 1
    if i >= len(lines):
        raise LessonError(f"{where}: the prediction is never closed with ':::'.")
    if not prompt:
        raise LessonError(f"{where}: a prediction needs its text (what should the learner predict?).")
    if answers and fields:
        raise LessonError(f"{where}: a prediction is a number ('answer:' line) or a choice ('- [ ]' lines), not both.")
    if not answers:
        if not fields.get("answer"):
            raise LessonError(
                f"{where}: a prediction needs an 'answer: {{{{ placeholder }}}}' line, or choices as '- [ ] …' lines."
            )
        within = None
        if "within" in fields:
            try:
                within = float(fields["within"])
            except ValueError:
                raise LessonError(f"{where}: 'within:' must be a number, got {fields['within']!r}.") from None
        return i, Prediction(" ".join(prompt), start + 1, answer=fields["answer"], within=within)
    if len(answers) < MIN_ANSWERS:
        raise LessonError(f"{where}: a choice prediction needs at least {MIN_ANSWERS} '- [ ] …' lines.")
    if sum(a.correct for a in answers) != 1:
        raise LessonError(f"{where}: mark exactly one choice with '- [x]': the one the widget will show.")
    return i, Prediction(" ".join(prompt), start + 1, answers=tuple(answers))


def parse_number(text: str) -> float | None:
    """The number in a filled answer ("31.2 %", "1,234", "−0.5"); None if there is none."""
    m = re.search(r"[-−]?\d[\d,]*(?:\.\d+)?", text)
    return float(m.group(0).replace(",", "").replace("−", "-")) if m else None


def shuffled(n: int, seed: str) -> list[int]:
    """A fixed permutation of range(n) for ``seed`` (a session's seed and a question's key).

    The same seed always gives the same order, so a rerun never reshuffles the
    options under the learner's cursor, while another session sees another order.
    """
    import hashlib
    import random

    order = list(range(n))
    random.Random(hashlib.sha256(seed.encode()).hexdigest()).shuffle(order)
    return order


def load_lessons(folder: Path | str | None = None) -> list[Lesson]:
    """Every lesson in ``folder`` (default ``lessons_dir()``), in number order.

    Raises LessonError for the first malformed file, or when there is no lesson at all.
    """
    folder = Path(folder) if folder is not None else lessons_dir()
    lessons = []
    for path in sorted(folder.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        lesson = parse_lesson(_read_lesson_file(path), path.name)
        lessons.append(Lesson(**{**lesson.__dict__, "path": path}))
    numbers = [lesson.number for lesson in lessons]
    if len(set(numbers)) != len(numbers):
        raise LessonError(f"Two lessons in {folder} share a number: {sorted(numbers)}.")
    names = [lesson.name for lesson in lessons]
    if len(set(names)) != len(names):  # links name lessons by slug, so two alike would be ambiguous
        raise LessonError(f"Two lessons in {folder} share a name: {sorted(names)}.")
    if not lessons:
        raise LessonError(f"There are no lessons (NN-slug.md files) in {folder}.")
    return sorted(lessons, key=lambda lesson: lesson.number)


# A lesson is a few KB of Markdown; a larger file is not one.
MAX_LESSON_BYTES = 1_000_000


def _read_lesson_file(path: Path) -> str:
    """The text of a lesson file; LessonError (a sentence) for a folder, a broken link, a
    device or pipe, a huge file, or bytes that are not UTF-8."""
    from digitrec.files import read_regular_file

    if path.is_symlink() and not path.exists():
        raise LessonError(f"{path.name} is a link to a file that does not exist; remove the link or restore its file.")
    try:
        data = read_regular_file(path, MAX_LESSON_BYTES, "a Markdown lesson", LessonError)
    except FileNotFoundError:
        raise LessonError(f"{path.name} disappeared while the lessons were being read; reload the page.") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LessonError(
            f"{path.name}, line {line}: the file is not UTF-8 text (byte {e.start}); save it as UTF-8."
        ) from None


def find_lesson(lessons: list[Lesson], ref: str) -> Lesson | None:
    """The lesson a link names: its slug ("convolution"), its file stem ("09-convolution") or its number ("9").

    Links the app writes use the slug, so they survive renumbering. A number means
    the lesson's current number (links written before the slugs may point at a
    renumbered lesson: there is no telling an old 10 from a new one); a number or
    name that matches nothing gives None.
    """
    ref = ref.strip().lower()
    for lesson in lessons:
        if ref in (lesson.name, lesson.slug):
            return lesson
    if ref.isascii() and ref.isdigit():
        return next((lesson for lesson in lessons if lesson.number == int(ref)), None)
    return None


def model_facts(nets: dict[str, nn.Module]) -> dict[str, str]:
    """Numbers a lesson's text may name, computed from the models (``describe``).

    nets: "fc" / "cnn" -> model. Gives, per network, e.g. ``fc.params``,
    ``fc.macs``, ``fc.layers`` (count), ``fc.hidden_1``, and per layer
    ``cnn.conv_1_1.params`` / ``.macs`` / ``.shape``, ``cnn.flatten.width``, ``cnn.channels``,
    ``cnn.padding``,
    plus ``cnn_fc.macs_ratio`` (how many times more arithmetic per digit).
    """
    from digitrec.models import describe

    facts: dict[str, str] = {}
    totals = {}
    for key, model in nets.items():
        rows = describe(model)
        params = sum(r.params for r in rows)
        macs = sum(r.macs for r in rows)
        totals[key] = (params, macs)
        facts[f"{key}.params"] = f"{params:,}"
        facts[f"{key}.macs"] = f"{macs:,}"
        facts[f"{key}.weight_layers"] = str(sum(1 for r in rows if r.params))
        for r in rows:
            facts[f"{key}.{r.name}.params"] = f"{r.params:,}"
            facts[f"{key}.{r.name}.macs"] = f"{r.macs:,}"
            facts[f"{key}.{r.name}.shape"] = " × ".join(str(s) for s in r.output_shape)
            if r.kind == "Flatten":
                facts[f"{key}.flatten.width"] = f"{r.output_shape[0]:,}"
        hidden = getattr(getattr(model, "config", None), "hidden", None)
        if hidden:
            for i, h in enumerate(hidden, start=1):
                facts[f"{key}.hidden_{i}"] = str(h)
        channels = getattr(getattr(model, "config", None), "channels", None)
        if channels:
            facts[f"{key}.channels"] = str(channels)
            facts[f"{key}.padding"] = str(model.config.padding)
            facts[f"{key}.conv_1_1.positive_biases"] = str(int((model.conv_1_1.bias > 0).sum()))
            facts[f"{key}.conv_1_1.bias_0"] = f"{float(model.conv_1_1.bias[0].detach()):.3f}"
            # Map 0's kernel: bottom row minus top row. Positive: it wants ink below and none above,
            # which is where a stroke's top edge is (ink is bright).
            kernel = model.conv_1_1.weight[0, 0].detach()  # (3, 3)
            top_edge = float(kernel[2].sum() - kernel[0].sum()) > 0
            facts[f"{key}.conv_1_1.map0_edge"] = "top" if top_edge else "bottom"
            facts[f"{key}.conv_1_1.map0_other_edge"] = "bottom" if top_edge else "top"
            facts[f"{key}.conv_1_1.map0_above"] = "dark" if top_edge else "bright"
            facts[f"{key}.conv_1_1.map0_below"] = "bright" if top_edge else "dark"
    from digitrec.race import TRAINING_STEP_FACTOR

    # A training step's cost in forward passes, as the race counts it: the forward, then a backward about twice it.
    facts["train.step_factor"] = str(TRAINING_STEP_FACTOR)
    facts["train.backward_factor"] = str(TRAINING_STEP_FACTOR - 1)
    if "fc" in totals and "cnn" in totals:
        facts["cnn_fc.macs_ratio"] = f"{totals['cnn'][1] / totals['fc'][1]:.0f}"
        facts["fc_cnn.params_ratio"] = f"{totals['fc'][0] / totals['cnn'][0]:.1f}"
    return facts


# ``{{ mine.… }}``: the learner's own model (imported, or sent from a notebook), beside the presets.
OWN_MODEL_PREFIX = "mine."
NO_OWN_MODEL = (
    "*Your own model:* you have not brought one yet. Import the `state_dict` of a network you trained in a "
    "notebook on the **Train** page (*Import your own model*), and this line will give its numbers beside these."
)

NO_OWN_MODEL_COST = "*Where would your own model sit?* Import it on the **Train** page to see its two numbers here."

NO_OWN_MODEL_GAP = ("*And your own model?* Import one you trained in a notebook on the **Train** page, and this "
                    "line will set its accuracy on training digits beside its accuracy on the test digits.")


def names_own_model(text: str) -> bool:
    """Whether ``text`` has a ``{{ mine.… }}`` placeholder (the page then links to where to import one)."""
    return any(m.group(1).startswith(OWN_MODEL_PREFIX) for m in _PLACEHOLDER.finditer(text))


def own_model_facts(name: str | None = None, model: nn.Module | None = None,
                    test_accuracy: float | None = None, train_accuracy: float | None = None) -> dict[str, str]:
    """``mine.summary``, ``mine.cost`` and ``mine.gap`` (sentences), ``mine.name``, ``mine.params``,
    ``mine.macs``, ``mine.accuracy``, ``mine.train_accuracy`` of the learner's own model, counted from
    the model itself (``describe``); with no model, the sentences invite importing one and the numbers
    are dashes.

    test_accuracy: 0..1 on the test digits (what the import measured), or None; train_accuracy: 0..1
    on the first ``config.OWN_MODEL_TRAIN_DIGITS`` training digits, or None.
    """
    if model is None:
        return {"mine.summary": NO_OWN_MODEL, "mine.cost": NO_OWN_MODEL_COST, "mine.gap": NO_OWN_MODEL_GAP,
                "mine.name": "your model", "mine.params": "–", "mine.macs": "–", "mine.accuracy": "–",
                "mine.train_accuracy": "–"}
    from digitrec import config
    from digitrec.models import describe

    rows = describe(model)
    params, macs = sum(r.params for r in rows), sum(r.macs for r in rows)
    accuracy = "–" if test_accuracy is None else f"{test_accuracy:.2%}"
    reads = ("reads an unmeasured share of the test digits" if test_accuracy is None
             else f"reads {accuracy} of the test digits right")
    return {
        "mine.summary": f"*Your own model:* **{name}** has {params:,} parameters, does {macs:,} multiply-adds "
                        f"per digit and {reads}.",
        "mine.cost": f"And your own model, **{name}**: {params:,} parameters to store, {macs:,} multiply-adds "
                     "to run on each digit.",
        "mine.gap": _own_model_gap(name, train_accuracy, test_accuracy, config.OWN_MODEL_TRAIN_DIGITS),
        "mine.name": str(name), "mine.params": f"{params:,}", "mine.macs": f"{macs:,}", "mine.accuracy": accuracy,
        "mine.train_accuracy": "–" if train_accuracy is None else f"{train_accuracy:.2%}",
    }


def _own_model_gap(name: str, train_accuracy: float | None, test_accuracy: float | None, digits: int) -> str:
    """The sentence setting the learner's model's training accuracy beside its test accuracy."""
    if train_accuracy is None or test_accuracy is None:
        return f"*Your own model:* **{name}** has no measured accuracy on both sets, so no gap to show."
    gap = (train_accuracy - test_accuracy) * 100
    if gap > 1:
        reading = "it knows the digits it trained on better than new ones: the overfitting of this lesson, in your model"
    elif gap >= -1:
        reading = "about the same on both, so it generalises to digits it never saw"
    else:
        reading = "better on the test digits, which happens when training used augmentation or dropout"
    return (f"*Your own model:* **{name}** reads {train_accuracy:.2%} of the first {digits:,} MNIST training "
            f"digits right and {test_accuracy:.2%} of the test digits: a gap of {gap:.1f} points; {reading}. "
            "(A notebook that trained on all 60,000 training digits has seen these.)")


def settings_facts() -> dict[str, str]:
    """The training defaults and data sizes a lesson may name, from ``digitrec.config`` (the one source).

    Gives ``data.train_digits``, ``data.test_digits``, ``train.epochs``, ``train.batch_size``,
    ``train.lr``, ``train.optimizer``, ``train.momentum``, ``run.eval_size``.
    """
    from digitrec import config

    return {
        "data.train_digits": f"{config.TRAIN_DIGITS:,}",
        "data.test_digits": f"{config.TEST_DIGITS:,}",
        "train.epochs": str(config.EPOCHS),
        "train.batch_size": str(config.BATCH_SIZE),
        "train.lr": f"{config.LR:g}",
        "train.optimizer": {"adam": "Adam", "sgd": "SGD"}.get(config.OPTIMIZER, config.OPTIMIZER),
        "train.momentum": f"{config.MOMENTUM:g}",
        "run.eval_size": f"{config.EVAL_SIZE:,}",
    }


def fill(text: str, facts: dict[str, str]) -> str:
    """Replace every ``{{ name }}`` with its fact; an unknown name raises LessonError."""

    def sub(m: re.Match) -> str:
        if m.group(1) not in facts:
            raise LessonError(f"Unknown placeholder {{{{ {m.group(1)} }}}}; known ones include {', '.join(sorted(facts)[:8])}, …")
        return facts[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def digit_facts(nets: dict[str, nn.Module], x, label: int | None = None) -> dict[str, str]:
    """Numbers about the learner's current digit x (1, 1, 28, 28), for ``{{ digit.… }}`` placeholders.

    Gives ``digit.ink`` (how many pixels carry ink), ``digit.max``, and per network
    ``digit.fc.prediction``, ``digit.fc.confidence``, ``digit.fc.loss`` (cross-entropy
    for the true label, or for the prediction when the label is unknown) and, for the
    FC network, its most active first-layer neuron ``digit.fc.top_neuron`` with its
    value ``digit.fc.top_value``.
    """

    import torch

    from digitrec.inspection import capture_activations

    facts = {
        "digit.ink": str(int((x > 0).sum())),
        "digit.blank": str(int((x == 0).sum())),
        "digit.max": f"{float(x.max()):.2f}",
        "digit.label": "unknown" if label is None else str(label),
    }
    for key, model in nets.items():
        acts = capture_activations(model, x)
        logits = list(acts.values())[-1][0]
        probs = torch.softmax(logits, dim=0)
        pred = int(probs.argmax())
        target = pred if label is None else label
        facts[f"digit.{key}.prediction"] = str(pred)
        facts[f"digit.{key}.confidence"] = f"{float(probs[pred]):.1%}"
        facts[f"digit.{key}.loss"] = f"{-float(torch.log_softmax(logits.double(), dim=0)[target]):.3f}"  # exact, no clamp
        facts[f"digit.{key}.target_probability"] = f"{float(probs[target]):.1%}"
        from digitrec.shift import REACH_LIMIT, shift_curve

        curve = shift_curve({key: model}, x[0, 0], target, max_shift=REACH_LIMIT, axis="x")
        facts[f"digit.{key}.shift_reach"] = str(max(curve.robust_range(key), 0))
        if "conv_1_1" in acts:  # the top-left corner of map 0: blank paper in any MNIST-style digit
            facts[f"digit.{key}.corner"] = f"{float(acts['conv_1_1'][0, 0, 0, 0]):.3f}"
            facts[f"digit.{key}.relu_corner"] = f"{float(acts['relu_1_1'][0, 0, 0, 0]):.3f}"
        if "fc_1" in acts:
            values = acts["fc_1"][0]
            facts[f"digit.{key}.top_neuron"] = str(int(values.argmax()))
            facts[f"digit.{key}.top_value"] = f"{float(values.max()):.3f}"
            facts[f"digit.{key}.top_bias"] = f"{float(model.fc_1.bias[int(values.argmax())].detach()):.3f}"
            facts[f"digit.{key}.active_neurons"] = str(int((acts['relu_1'][0] > 0).sum()))
    return facts


# ---------------------------------------------------------------- facts measured on MNIST
# Claims about how the models behave on many digits (zero fractions, dead maps,
# train against test accuracy, ...) are measured here, once per model, and
# cached by the app; each has a test that measures it again.

TRAIN_SAMPLE = 10_000  # training digits for "accuracy on its own training digits" (the first ones)
CROP_SHIFT = 5  # pixels: the shift whose cropping lesson 12 talks about
CROP_SHARE = 0.05  # a digit "loses ink" when more than this share of its ink leaves the frame
SHIFT_SAMPLE = 1_000  # test digits for the share still read right after a shift
SHIFTS = (1, 2, 3, 4, 5, 6)


def _percent(share: float) -> str:
    return f"{share:.1%}"


def onoff_lookup_accuracy(model: nn.Module, train, test) -> float:
    """How well FCNet's first-layer on/off pattern alone tells digits apart.

    Each digit is reduced to which first-layer neurons pass ReLU (16 yes/no for
    784-16-16-10); a lookup table gives each pattern seen on the training digits
    its most common class, and a test digit gets its pattern's class (wrong if
    the pattern was never seen). Returns the share of test digits it gets right.
    """
    from collections import Counter, defaultdict

    import torch

    from digitrec.data import to_input

    def codes(images) -> list[int]:
        with torch.inference_mode():
            on = model.fc_1(model.flatten(to_input(images))) > 0  # (N, hidden_1)
        weights = 2 ** torch.arange(on.shape[1], dtype=torch.int64)
        return (on.long() * weights).sum(dim=1).tolist()

    table: dict[int, Counter] = defaultdict(Counter)
    for code, label in zip(codes(train.images), train.labels.tolist()):
        table[code][label] += 1
    best = {code: counts.most_common(1)[0][0] for code, counts in table.items()}
    right = sum(best.get(code) == label for code, label in zip(codes(test.images), test.labels.tolist()))
    return right / len(test)


def crop_shares(images, shift: int = CROP_SHIFT, share: float = CROP_SHARE) -> dict[str, float]:
    """Share of digits that lose more than ``share`` of their ink when moved ``shift`` pixels each way.

    images: (N, 28, 28) uint8. Uses ``digitrec.shift.shift_digit``, the shift the
    shift test applies. Returns {"up", "down", "left", "right"} -> share of digits.
    """
    from digitrec.shift import shift_digit

    x = images.float() / 255.0
    ink = x.sum(dim=(1, 2))  # (N,)
    moves = {"up": (0, -shift), "down": (0, shift), "left": (-shift, 0), "right": (shift, 0)}
    out = {}
    for name, (dx, dy) in moves.items():
        kept = shift_digit(x, dx, dy).sum(dim=(1, 2))
        out[name] = float(((ink - kept) > share * ink).float().mean())
    return out


def blank_share_of_positive(model: nn.Module, images, layer: str = "relu_1_1") -> float:
    """Of the positive values of a first-block ReLU map (lined up with the pixels), the share over blank paper.

    images: (N, 28, 28) uint8. Needs a map the size of the digit (padding 1).
    """
    import torch

    from digitrec.data import to_input
    from digitrec.inspection import forward_hooks

    x = to_input(images)
    with torch.inference_mode(), forward_hooks(model, [layer]) as records:
        model(x)
    out = records[layer][1]  # (N, C, 28, 28)
    positive = out > 0
    blank = (x == 0).expand_as(out)
    return float((positive & blank).sum()) / max(int(positive.sum()), 1)


def shift_survival(nets: dict[str, nn.Module], test, shifts=SHIFTS, n: int = SHIFT_SAMPLE) -> dict[str, dict[int, float]]:
    """Per network, the share of the first ``n`` test digits still read right when moved k pixels to the right.

    Returns key -> {k: share}, k in ``shifts`` (0 is included for reference).
    """
    from digitrec.data import to_input
    from digitrec.inspection import predict_proba
    from digitrec.shift import shift_digit

    x = to_input(test.images[:n])  # (n, 1, 28, 28)
    labels = test.labels[:n]
    out = {}
    for key, model in nets.items():
        out[key] = {}
        for k in (0, *shifts):
            guess = predict_proba(model, shift_digit(x, k, 0)).argmax(dim=1)
            out[key][k] = float((guess == labels).float().mean())
    return out


def _train_accuracy_facts(nets, mnist) -> dict[str, str]:
    from digitrec.train import evaluate

    facts = {"train.sample": f"{TRAIN_SAMPLE:,}"}
    for key, model in nets.items():
        facts[f"{key}.train_accuracy"] = f"{evaluate(model, mnist.train.subset(TRAIN_SAMPLE))[1]:.2%}"
    return facts


def relu_facts(nets, mnist, stats: dict | None = None) -> dict[str, str]:
    """Zero fractions and dead units per ReLU layer (``stats``: key -> ``units.relu_statistics``, if already measured:
    the app passes the same measurement the CNN overview marks dead maps from and the unit pages read)."""
    from digitrec import units

    facts = {}
    for key, model in nets.items():
        layers = stats[key] if stats and key in stats else units.relu_statistics(units.statistics(model, mnist.test))
        for name, s in layers.items():
            facts[f"{key}.{name}.zero_percent"] = _percent(s.zero_fraction)
            facts[f"{key}.{name}.dead"] = str(len(s.dead))
            facts[f"{key}.{name}.units"] = str(s.units)
        facts[f"{key}.dead_units"] = str(sum(len(s.dead) for s in layers.values()))
        facts[f"{key}.relu_units"] = str(sum(s.units for s in layers.values()))
    if "cnn" in nets:
        facts["cnn.relu_1_1.blank_share"] = _percent(blank_share_of_positive(nets["cnn"], mnist.test.images[:2000]))
    return facts


def unit_facts(nets, mnist, stats: dict | None = None) -> dict[str, str]:
    """What the lessons say about single units (``stats``: key -> ``units.statistics``, if already measured).

    Per network: ``NET.units.quietest`` (the unit that fires least, as "conv_1_2 map 7"), its ``quietest_fires``
    (share of test digits it is positive on) and ``quietest_peak`` (its strongest value on any of them); per unit
    layer: ``NET.units.LAYER.clearest`` ("map 4": the unit whose nine top inputs agree most), its
    ``clearest_agreement`` and the layer's ``median_agreement`` (mean pairwise correlation of the top inputs),
    ``clearest_classes`` (the classes of its top digits), ``clearest_class`` (the most common of them) and
    ``clearest_class_count``, and ``field`` (the input side a cell sees, px). The unit widgets with ``pick=``
    show the same units (``units.pick_unit``).
    """
    from collections import Counter
    from statistics import median

    from digitrec import units

    facts = {}
    for key, model in nets.items():
        s = stats[key] if stats and key in stats else units.statistics(model, mnist.test)
        quiet = units.pick_unit(model, s, mnist.test, "quietest")
        kind = "map" if s[quiet.layer].shape else "neuron"
        facts[f"{key}.units.quietest"] = f"{quiet.layer} {kind} {quiet.index}"
        facts[f"{key}.units.quietest_fires"] = _percent(float(s[quiet.layer].positive[quiet.index]))
        facts[f"{key}.units.quietest_peak"] = f"{float(s[quiet.layer].peak[:, quiet.index].max()):.3f}"
        for layer in s:
            kind = "map" if s[layer].shape else "neuron"
            clear = units.pick_unit(model, s, mnist.test, "clearest", layer)
            scores = [units.agreement(units.top_inputs(units.biography(model, s, mnist.test, units.Unit(layer, u)),
                                                       mnist.test)) for u in range(s[layer].peak.shape[1])]
            bio = units.biography(model, s, mnist.test, clear)
            classes = [int(c) for c in mnist.test.labels[bio.top_indices]]
            top_class, count = Counter(classes).most_common(1)[0]
            prefix = f"{key}.units.{layer}"
            facts[f"{prefix}.clearest"] = f"{kind} {clear.index}"
            facts[f"{prefix}.clearest_agreement"] = f"{scores[clear.index]:.3f}"
            facts[f"{prefix}.median_agreement"] = f"{median(scores):.3f}"
            facts[f"{prefix}.clearest_classes"] = ", ".join(str(c) for c in classes)
            facts[f"{prefix}.clearest_class"] = str(top_class)
            facts[f"{prefix}.clearest_class_count"] = str(count)
            facts[f"{prefix}.field"] = str(bio.receptive_field)
    return facts


def _onoff_facts(nets, mnist) -> dict[str, str]:
    return {"fc.onoff_accuracy": _percent(onoff_lookup_accuracy(nets["fc"], mnist.train, mnist.test))} if "fc" in nets else {}


def _crop_facts(nets, mnist) -> dict[str, str]:
    facts = {"shift.crop_pixels": str(CROP_SHIFT), "shift.crop_share": f"{CROP_SHARE:.0%}"}
    facts.update({f"shift.crop_{d}": _percent(v) for d, v in crop_shares(mnist.test.images).items()})
    return facts


def _shift_facts(nets, mnist) -> dict[str, str]:
    facts = {"shift.sample": f"{SHIFT_SAMPLE:,}"}
    for key, by_shift in shift_survival(nets, mnist.test).items():
        facts.update({f"shift.{key}.right_at_{k}": _percent(v) for k, v in by_shift.items()})
    return facts


def map_facts(nets, mnist) -> dict[str, str]:
    """``NET.map.LAYER.separation`` and ``.words``: how far the classes separate on the digit map's
    default projection (PCA of all the test digits, as the map widget builds it) at each map layer."""
    from digitrec import embedding

    facts: dict[str, str] = {}
    labels = mnist.test.labels
    for key, model in nets.items():
        layers = embedding.map_layers(model)
        features = embedding.representations(model, mnist.test.images, layers)
        for layer in layers:
            score = embedding.separation(embedding.fit_pca(layer, features[layer]).coords, labels)
            facts[f"{key}.map.{layer}.separation"] = f"{score:.0%}"  # as the map's caption rounds it
            facts[f"{key}.map.{layer}.words"] = embedding.separation_words(score)
    return facts


# Groups of measured facts, each computed (and cached by the app) only when a lesson names one of them.
DATASET_FACT_GROUPS = {
    "train_accuracy": (_train_accuracy_facts, re.compile(r"^(train\.sample|\w+\.train_accuracy)$")),
    "relu": (relu_facts, re.compile(r"^\w+\.(relu_[\d_]+\.(zero_percent|dead|units|blank_share)|dead_units|relu_units)$")),
    "onoff": (_onoff_facts, re.compile(r"^fc\.onoff_accuracy$")),
    "units": (unit_facts, re.compile(r"^\w+\.units\.[\w.]+$")),
    "crop": (_crop_facts, re.compile(r"^shift\.crop_\w+$")),
    "shift": (_shift_facts, re.compile(r"^shift\.(sample|\w+\.right_at_\d+)$")),
    "map": (map_facts, re.compile(r"^\w+\.map\.\w+\.(separation|words)$")),
}


def fact_groups(names) -> set[str]:
    """The DATASET_FACT_GROUPS a set of placeholder names needs."""
    return {g for g, (_, pattern) in DATASET_FACT_GROUPS.items() for n in names if pattern.match(n)}


def dataset_facts(nets: dict[str, nn.Module], mnist, groups=None) -> dict[str, str]:
    """Facts measured on MNIST for the lessons' ``{{ … }}`` placeholders (seconds: cache the result).

    nets: "fc" / "cnn" -> model; groups: names from DATASET_FACT_GROUPS (default all).
    Gives per network ``NET.train_accuracy`` (on the first TRAIN_SAMPLE training
    digits), per ReLU layer ``NET.LAYER.zero_percent``, ``NET.LAYER.dead`` (units that
    never fire on any test digit) and ``.units``, ``NET.dead_units`` / ``NET.relu_units``
    (totals), ``cnn.relu_1_1.blank_share`` (positive values over blank paper),
    ``fc.onoff_accuracy``, ``shift.crop_up`` (down, left, right),
    ``shift.NET.right_at_K`` and ``NET.map.LAYER.separation`` / ``.words`` (``map_facts``).
    """
    facts: dict[str, str] = {}
    for name in groups if groups is not None else DATASET_FACT_GROUPS:
        facts.update(DATASET_FACT_GROUPS[name][0](nets, mnist))
    return facts


# ---------------------------------------------------------------- lesson 7: backpropagation (digitrec.backprop)
# Kept apart from the facts above: the backprop lesson's numbers come from one
# backward pass per network (digitrec.backprop.Backward), which the app caches.


def _gradient_text(v: float) -> str:
    """A blame or gradient for lesson text: 4 decimals, or 2 significant digits in e-notation when tiny."""
    text = f"{v:+.4f}" if v == 0 or abs(v) >= 1e-3 else f"{v:+.1e}"
    return text.replace("-", "\u2212")


def backprop_facts(passes: dict) -> dict[str, str]:
    """Numbers of the backward pass for ``{{ bp.… }}`` placeholders.

    passes: "fc" / "cnn" -> ``digitrec.backprop.Backward`` for the current digit and
    its right answer (the label, or the network's own answer for a drawing). Gives
    per network ``bp.KEY.target``, ``.loss``, ``.p_target``, ``.score_blame`` (p − 1
    of the target), ``.runner_up`` / ``.runner_up_blame`` (the most likely wrong
    digit and its blame p), ``.runner_up_as_target_blame`` (its blame p − 1 were it
    the target); for an FCNet ``bp.fc.layer`` (its last hidden layer),
    ``.blamed_neuron`` / ``.blamed_delta`` (that layer's most blamed neuron),
    ``.off_neurons`` / ``.width`` (how many of its neurons ReLU switched off, so
    their blame is 0) and ``bp.fc.first_layer``; for a CNN ``bp.cnn.positions``
    (how many positions the first convolution's kernel visits).
    """
    from digitrec import backprop

    facts: dict[str, str] = {}
    for key, bw in passes.items():
        t = bw.target
        probs = bw.probs.double()
        wrong = probs.clone()
        wrong[t] = -1.0
        runner_up = int(wrong.argmax())
        facts[f"bp.{key}.target"] = str(t)
        loss = max(bw.loss, 0.0)  # −log p ≥ 0; float rounding can give −0.0
        facts[f"bp.{key}.loss"] = f"{loss:.4f}" if loss >= 1e-3 or loss == 0 else f"{loss:.1e}"
        facts[f"bp.{key}.p_target"] = f"{float(probs[t]):.2%}"
        facts[f"bp.{key}.score_blame"] = _gradient_text(float(bw.output_delta[t]))
        facts[f"bp.{key}.runner_up"] = str(runner_up)
        facts[f"bp.{key}.runner_up_blame"] = _gradient_text(float(bw.output_delta[runner_up]))
        # Were the runner-up the right answer, its score's blame would be p − 1 (the chain rule's p − onehot).
        facts[f"bp.{key}.runner_up_as_target_blame"] = _gradient_text(float(probs[runner_up]) - 1.0)
        linears = bw.linear_layers()
        if len(linears) >= 2 and not bw.conv_layers():
            layer = linears[-2]
            delta = bw.layer(layer).grad_output
            neuron = backprop.most_blamed(bw, layer)
            facts[f"bp.{key}.layer"] = layer
            facts[f"bp.{key}.first_layer"] = linears[0]
            facts[f"bp.{key}.width"] = str(delta.numel())
            facts[f"bp.{key}.blamed_neuron"] = str(neuron)
            facts[f"bp.{key}.blamed_delta"] = _gradient_text(float(delta[neuron]))
            facts[f"bp.{key}.off_neurons"] = str(int((bw.layer(layer).output <= 0).sum()))
        if bw.conv_layers():
            first = bw.layer(bw.conv_layers()[0])
            facts[f"bp.{key}.positions"] = f"{first.grad_output[0].numel():,}"
    return facts


# --- the training lab's numbers (lessons 08 and 13; kept apart from the course's facts above) ---------


LAB_PREFIX = "lab."  # every lab fact's name starts so: they cost training runs, so they are computed on demand


def lab_facts(mnist, pretrained: dict) -> dict[str, str]:
    """Numbers lessons 08 and 13 name, measured by real runs (``digitrec.lab``) and on the shipped networks.

    mnist: ``digitrec.data.MNIST``; pretrained: "fc" / "cnn" -> ``checkpoints.Checkpoint`` (model and metadata).
    Runs (plain SGD, FCNet 16-16, 64 digits a step, seed 0), each a few seconds:
    ``lab.lr_0_1.test`` … ``lab.lr_3.test`` and ``lab.lr_best`` (the learning-rate sweep);
    ``lab.small.train`` / ``.validation`` / ``.test`` (300 training digits) and ``lab.full.…`` (all);
    ``lab.small.gap`` (training minus validation, in points); ``lab.relu.test`` / ``lab.linear.test``
    (3,000 steps with and without ReLU); ``lab.steps``, ``lab.batch``, ``lab.validation_size``,
    ``lab.train_digits``. On the shipped networks: ``lab.shift.fc.far`` / ``lab.shift.cnn.far`` (accuracy on
    test digits moved 4 px sideways, mean of both ways), ``lab.shift.fc.centre`` / ``cnn.centre`` (not moved),
    ``lab.drawn.fc`` / ``lab.drawn.cnn`` (the drawn-digit bench, ``digitrec.drawn``), and the augmentation
    they were trained with, ``lab.weights.cnn.shift`` / ``.rotation`` (and ``fc``).
    """
    import json

    from digitrec import config, drawn, lab
    from digitrec.data import split_sizes

    pct = "{:.1%}".format
    facts = {
        "lab.steps": f"{lab.BASE['max_steps']:,}",
        "lab.batch": str(lab.BASE["batch_size"]),
        "lab.validation_size": f"{config.VALIDATION_SIZE:,}",
        "lab.train_digits": f"{split_sizes(config.TRAIN_DIGITS)[0]:,}",
        "lab.eval_size": f"{config.EVAL_SIZE:,}",
    }
    sweep = lab.run_experiment("learning-rate", mnist)
    for label, r in sweep.items():
        facts[f"lab.lr_{label.removeprefix('lr ').replace('.', '_')}.test"] = pct(r.test_accuracy)
    facts["lab.lr_best"] = lab.verdict("learning-rate", sweep)
    sizes = lab.run_experiment("training-size", mnist)
    for name, label in (("small", "300 digits"), ("full", "all training digits")):
        r = sizes[label]
        facts[f"lab.{name}.train"], facts[f"lab.{name}.validation"] = pct(r.train_accuracy), pct(r.validation_accuracy)
        facts[f"lab.{name}.test"] = pct(r.test_accuracy)
    small = sizes["300 digits"]
    facts["lab.small.gap"] = f"{(small.train_accuracy - small.validation_accuracy) * 100:.0f}"
    activation = lab.run_experiment("activation", mnist)
    facts["lab.relu.test"] = pct(activation["ReLU"].test_accuracy)
    facts["lab.linear.test"] = pct(activation["no activation"].test_accuracy)
    facts["lab.activation_steps"] = f"{lab.EXPERIMENTS['activation'].values('ReLU')['max_steps']:,}"

    test = mnist.test.subset(lab.SHIFT_DIGITS)
    bench = drawn.drawn_digits()
    facts["lab.drawn.count"] = str(len(bench))
    facts["lab.shift_digits"] = f"{lab.SHIFT_DIGITS:,}"
    for key, ck in pretrained.items():
        model = ck.model
        at = dict(zip(lab.SHIFTS, lab.shift_accuracy(model, test, lab.SHIFTS)))
        facts[f"lab.shift.{key}.far"] = pct((at[-4] + at[4]) / 2)
        facts[f"lab.shift.{key}.centre"] = pct(at[0])
        facts[f"lab.drawn.{key}"] = pct(drawn.accuracy(model, bench))
        train_config = json.loads(ck.info.extra.get("train_config", "{}"))
        facts[f"lab.weights.{key}.shift"] = str(train_config.get("augment_shift", 0))
        facts[f"lab.weights.{key}.rotation"] = f"{train_config.get('augment_rotation', 0):g}"
    return facts
