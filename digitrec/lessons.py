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
  (``[x]`` right, ``[ ]`` wrong).

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
class Block:
    """One piece of a step, in order: Markdown text, a widget or a question."""

    kind: str  # "text", "widget" or "question"
    text: str = ""
    widget: Widget | None = None
    question: Question | None = None


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


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str  # "07-convolution"
    title: str
    goal: str
    networks: tuple[str, ...]
    minutes: int
    steps: tuple[Step, ...]
    path: Path | None = field(default=None, compare=False)

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
            else:
                raise LessonError(f"{where}: unknown directive {stripped!r}; use '::: widget NAME' or '::: question'.")
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
    if not prompt or len(answers) < 2:
        raise LessonError(f"{name}, line {start + 1}: a question needs its text and at least two '- [ ] answer' lines.")
    if not any(a.correct for a in answers):
        raise LessonError(f"{name}, line {start + 1}: mark the right answer with '- [x]'.")
    if any(not a.feedback for a in answers):
        raise LessonError(f"{name}, line {start + 1}: give every answer feedback after '::'.")
    return i, Question(" ".join(prompt), tuple(answers), start + 1)


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
    if "fc" in totals and "cnn" in totals:
        facts["cnn_fc.macs_ratio"] = f"{totals['cnn'][1] / totals['fc'][1]:.0f}"
        facts["fc_cnn.params_ratio"] = f"{totals['fc'][0] / totals['cnn'][0]:.1f}"
    return facts


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
        if "fc_1" in acts:
            values = acts["fc_1"][0]
            facts[f"digit.{key}.top_neuron"] = str(int(values.argmax()))
            facts[f"digit.{key}.top_value"] = f"{float(values.max()):.3f}"
            facts[f"digit.{key}.active_neurons"] = str(int((acts['relu_1'][0] > 0).sum()))
    return facts
