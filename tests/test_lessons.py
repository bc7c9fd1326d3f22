"""The course: every lesson parses, names real widgets with parameters they take,
uses only known placeholders, and the numbers it shows are the models' own.
Plus unit tests of the lesson format's parser (digitrec.lessons)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

from digitrec import checkpoints, lessons, models, samples
from digitrec.lessons import LessonError, fill, load_lessons, parse_lesson
from streamlit_app.widgets import registry

REPO = Path(__file__).resolve().parents[1]
README = REPO / "lessons" / "README.md"
COURSE = [
    "01-image-is-numbers", "02-flatten", "03-one-neuron", "04-relu", "05-softmax-and-loss", "06-learning",
    "07-backpropagation", "08-does-it-generalise", "09-convolution", "10-relu-and-pooling", "11-tinyvgg-end-to-end",
    "12-fc-versus-cnn", "13-augmentation", "14-what-did-it-look-at", "15-breaking-it",
]
# Lessons 07, 08, 13 and 15 are written by other helpers and merged later: the course tolerates the gaps.
NUMBERS = [int(slug[:2]) for slug in COURSE]
# Widgets each lesson must embed (the outline): a lesson that lost one is not the lesson asked for.
REQUIRED_WIDGETS = {
    1: {"digit_input", "digit_numbers", "preprocess_view"},
    2: {"flatten_view"},
    3: {"fc_neuron", "fc_weight_grid", "unit_biography"},
    4: {"linear_collapse", "fc_forward_steps", "unit_biography"},
    5: {"softmax", "loss", "confident_mistakes"},
    6: {"live_training", "loss_slice"},
    7: {"backprop_loss", "backprop_diagram", "backprop_weight", "backprop_gradient_pictures", "backprop_sgd_step"},
    8: {"training_lab", "confusion_matrix", "confident_mistakes"},
    9: {"conv_arithmetic", "conv_sandbox"},
    10: {"relu_detail", "pool_detail", "unit_biography"},
    11: {"cnn_overview", "cnn_filters", "softmax", "unit_biography"},
    12: {"network_table", "race_chart", "shift_test", "confusion_matrix"},
    13: {"training_lab", "augment_preview", "shift_test"},
    14: {"attribution_compare", "attribution_classes", "attribution_sanity"},
    15: {"unit_biography", "unit_link", "unit_intervention", "digit_map", "make_it_a", "noise_test", "draw_to_fool"},
}

GOOD = """---
title: A test lesson
goal: Check the parser.
networks: fc, cnn
minutes: 5
---

## First step

Some text with {{ fc.params }}.

::: widget softmax net=cnn

## Second step

::: question
Is this a question?
- [x] Yes :: Right.
- [ ] No :: It is.
- [ ] Maybe :: It is.
:::
"""


@pytest.fixture(scope="module")
def course() -> list[lessons.Lesson]:
    return load_lessons(lessons.LESSONS_DIR)


@pytest.fixture(scope="module")
def nets() -> dict:
    return {k: checkpoints.load_pretrained(k).model for k in ("fc", "cnn")}


@pytest.fixture(scope="module")
def measured(nets, mnist) -> dict[str, str]:
    """The facts measured on MNIST (zero fractions, train accuracy, ...), once for this module."""
    return lessons.dataset_facts(nets, mnist)


@pytest.fixture(scope="module")
def facts(nets, measured) -> dict[str, str]:
    """What the lessons page fills placeholders from (streamlit_app.state.lesson_facts), built the same way."""
    f = lessons.model_facts(nets)
    f.update(lessons.settings_facts())
    f.update(lessons.digit_facts(nets, samples.sample_digit(7).reshape(1, 1, 28, 28), 7))
    from digitrec import backprop  # lesson 7's {{ bp.… }}: the backward pass for the digit and its label

    f.update(lessons.backprop_facts({k: backprop.backward(m, samples.sample_digit(7).reshape(1, 1, 28, 28), 7)
                                     for k, m in nets.items()}))
    for key in nets:
        f[f"{key}.accuracy"] = f"{checkpoints.load_pretrained(key).info.test_accuracy:.2%}"
    linear = checkpoints.load_pretrained("linear")
    f["linear.accuracy"] = f"{linear.info.test_accuracy:.2%}"
    f["linear.params"] = f"{models.count_params(linear.model):,}"
    f.update(measured)
    f.update(lessons.own_model_facts())  # {{ mine.… }} with no model of the learner's own: the invitation
    # The lab lessons' measured numbers (training runs, seconds each): here only their names;
    # tests/test_lab.py computes them with lessons.lab_facts and fills lessons 08 and 13 with them.
    f.update({name: "0.0%" for path in (REPO / "lessons").glob("*.md")
              for name in re.findall(r"\{\{\s*(lab\.[A-Za-z0-9_.]+)\s*\}\}", path.read_text(encoding="utf-8"))})
    return f


def _all_text(lesson: lessons.Lesson) -> str:
    """Every piece of Markdown a learner reads in the lesson, in order (placeholders unfilled),
    with runs of white space (line breaks) made single spaces so sentences can be searched."""
    parts = [lesson.goal]
    for step in lesson.steps:
        parts.append(step.title)
        for b in step.blocks:
            if b.text:
                parts.append(b.text)
            if b.question:
                parts.append(b.question.prompt)
                parts += [a.text + " " + a.feedback for a in b.question.answers]
            if b.predict:
                parts += [b.predict.prompt, b.predict.answer]
                parts += [a.text + " " + a.feedback for a in b.predict.answers]
    return " ".join(" ".join(parts).split())


# ---------------------------------------------------------------- the course files


def test_the_course_is_its_lessons_in_order_with_gaps(course):
    assert [lesson.slug for lesson in course] == COURSE
    assert [lesson.number for lesson in course] == NUMBERS


def _lesson(course, number):
    return next(lesson for lesson in course if lesson.number == number)


@pytest.mark.parametrize("number", NUMBERS)
def test_lesson_shape(course, number):
    lesson = _lesson(course, number)
    assert 4 <= len(lesson.steps) <= 9, f"{lesson.slug}: {len(lesson.steps)} steps"
    assert lesson.minutes > 0 and lesson.title and lesson.goal
    # It ends with 2-3 check-yourself questions, each with a right answer and feedback on every answer.
    last = lesson.steps[-1].questions
    assert 2 <= len(last) <= 3, f"{lesson.slug}: the last step has {len(last)} questions"
    for q in lesson.questions:
        assert any(a.correct for a in q.answers) and all(a.feedback for a in q.answers)
        assert len(q.answers) >= 3, f"{lesson.slug}: a two-option question is a coin flip: {q.prompt}"
        # The page says "Right." / "Not quite." itself; feedback that says it too reads "Right. Right: …".
        assert not [a.feedback for a in q.answers if re.match(r"(Right|Not quite|Correct|Wrong)\b", a.feedback)]
        # Options are shuffled: an answer that points at another by place makes no sense.
        assert not [a.text for a in q.answers if re.search(r"(all|none|both) of the above", a.text, re.I)]
    # A live widget in most steps (the closing question step aside).
    with_widget = sum(1 for step in lesson.steps[:-1] if step.widgets)
    assert with_widget * 2 > len(lesson.steps) - 1, f"{lesson.slug}: only {with_widget} steps have a widget"
    assert REQUIRED_WIDGETS[number] <= {w.name for step in lesson.steps for w in step.widgets}


@pytest.mark.parametrize("number", NUMBERS)
def test_the_learner_thinks(course, number):
    """A question from the learner's own numbers in every lesson; a prediction to commit to from lesson 3 on;
    no widget repeated with identical settings (a second look needs a second activity)."""
    lesson = _lesson(course, number)
    own = [q for q in lesson.questions
           if "{{ digit." in q.prompt + " ".join(a.text + a.feedback for a in q.answers)]
    assert own, f"{lesson.slug}: no question uses the learner's own numbers ({{{{ digit.… }}}})"
    if number >= 3:
        assert any(step.predictions for step in lesson.steps), f"{lesson.slug}: no predict-then-reveal block"
    seen = [(w.name, tuple(sorted(w.params.items()))) for step in lesson.steps for w in step.widgets]
    assert len(seen) == len(set(seen)), f"{lesson.slug}: a widget repeated with identical settings"


def test_predictions_hide_a_widget_that_reveals_them(course):
    """A prediction is followed, in its step, by what reveals the answer (a widget or the text naming it)."""
    for lesson in course:
        for step in lesson.steps:
            kinds = [b.kind for b in step.blocks]
            for i, kind in enumerate(kinds):
                if kind == "predict":
                    assert "widget" in kinds[i + 1:] or "text" in kinds[i + 1:], f"{lesson.slug}: {step.title}"


@pytest.mark.parametrize("number", NUMBERS)
def test_every_widget_exists_and_accepts_its_parameters(course, number):
    for step in _lesson(course, number).steps:
        for w in step.widgets:
            assert w.name in registry.WIDGETS, f"line {w.line}: unknown widget {w.name}"
            function = registry.resolve(w.name)
            assert callable(function)
            sig = inspect.signature(function)
            assert sig.parameters["key"].kind is inspect.Parameter.KEYWORD_ONLY
            sig.bind(key="k", **w.params)  # raises TypeError for a parameter it does not take
            for name, value in w.params.items():  # and each value has the type of the parameter's default
                default = sig.parameters[name].default
                assert isinstance(value, type(default)) or (type(default) is float and type(value) is int), (
                    f"line {w.line}: {w.name} {name}={value!r}, default {default!r}"
                )
            assert registry.check(w.name, w.params) == []


@pytest.mark.parametrize("number", NUMBERS)
def test_every_placeholder_is_a_known_fact(course, facts, number):
    lesson = _lesson(course, number)
    assert lesson.placeholders <= set(facts), sorted(lesson.placeholders - set(facts))
    filled = fill(_all_text(lesson), facts)
    assert "{{" not in filled and "}}" not in filled


def test_model_numbers_are_never_typed_into_the_lessons(course, nets):
    """Parameter and multiply-add counts (of any layer) appear only through placeholders."""
    counts = set()
    for model in nets.values():
        rows = models.describe(model)
        counts |= {r.params for r in rows if r.params > 100} | {r.macs for r in rows if r.macs > 100}
        counts |= {sum(r.params for r in rows), sum(r.macs for r in rows)}
    for lesson in course:
        text = _all_text(lesson)
        typed = {int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d", text)}
        assert not typed & counts, f"{lesson.slug} types in {typed & counts}: use a placeholder"


MNIST_CONSTANTS = {"784", "10,000", "60,000", "70,000"}
SETTINGS = set(lessons.settings_facts())


def _typed_facts(text: str, facts: dict[str, str]) -> set[str]:
    """Values of ``facts`` (model and measured numbers) that ``text`` (placeholders unfilled) types in.

    A value counts when it is distinctive: a percentage (95.63%, 30.1%) or a number of three or more
    digits or with a decimal point (13,002; 0.088). Small whole numbers (10 maps, 16 neurons) are too
    common in prose to tell apart from a typed fact.
    """
    found = set()
    for name, value in facts.items():
        if value in MNIST_CONSTANTS:  # the data's, not a model's: 784 pixels, 10,000 test digits
            continue
        if name in SETTINGS:  # training defaults (0.001, 0.9) are also everyday numbers in worked examples
            continue
        if name.startswith("digit.") or not re.fullmatch(r"−?-?[\d,]+(\.\d+)?%?", value):
            continue
        digits = re.sub(r"\D", "", value)
        if not (value.endswith("%") or "." in value or len(digits) >= 3):
            continue
        if re.search(r"(?<![\d.,])" + re.escape(value) + r"(?![\d,]|\.\d)", text) or (
            value.endswith("%") and re.search(r"(?<![\d.,])" + re.escape(value[:-1]) + r" ?%", text)
        ):
            found.add(f"{name}={value}")
    return found


def test_no_lesson_types_a_number_a_placeholder_provides(course, facts):
    for lesson in course:
        assert not _typed_facts(_all_text(lesson), facts), f"{lesson.slug}: use the placeholders"


def test_the_typed_number_check_catches_a_typed_fact(facts):
    """The check above is not vacuous: a lesson that types the measured zero fraction is caught."""
    typed = f"Only {facts['cnn.relu_1_1.zero_percent']} of the values are 0; the ladder starts at {facts['linear.accuracy']}."
    found = _typed_facts(typed, facts)
    assert "cnn.relu_1_1.zero_percent=" + facts["cnn.relu_1_1.zero_percent"] in found
    assert any(f.startswith("linear.accuracy=") for f in found)
    assert not _typed_facts("Only {{ cnn.relu_1_1.zero_percent }} of the values are 0.", facts)


def test_lesson_12_shows_the_models_own_counts(course, nets, facts):
    text = fill(_all_text(_lesson(course, 12)), facts)
    rows = {k: models.describe(m) for k, m in nets.items()}
    params = {k: sum(r.params for r in rs) for k, rs in rows.items()}
    macs = {k: sum(r.macs for r in rs) for k, rs in rows.items()}
    for k in nets:
        assert f"{params[k]:,}" in text and f"{macs[k]:,}" in text
    conv_1_2 = next(r for r in rows["cnn"] if r.name == "conv_1_2")
    assert conv_1_2.params == 10 * 10 * 9 + 10  # worked out by hand: 10 kernels of 10 x 3 x 3, 10 biases
    assert f"{conv_1_2.params:,}" in text and f"{conv_1_2.macs:,}" in text
    assert f"about {round(macs['cnn'] / macs['fc'])} times as many" in text
    assert f"{params['fc'] / params['cnn']:.1f} times as many" in text


def test_lesson_12_says_the_learners_own_models_numbers_or_invites_one(course, facts, mnist):
    """The "your model" lines: with an own model they give its parameters, multiply-adds and test accuracy,
    recomputed here from the model; with none they invite importing one on the Train page."""
    from digitrec import layers, train

    lesson = _lesson(course, 12)
    text = fill(_all_text(lesson), facts)
    assert lessons.NO_OWN_MODEL in text and lessons.NO_OWN_MODEL_COST in text
    assert any(lessons.names_own_model(b.text) for s in lesson.steps for b in s.blocks if b.text)

    spec = layers.parse("conv3x3(4,p=1) relu maxpool2 flatten linear(10)", name="tiny")
    model = layers.SpecNet(spec).eval()
    accuracy = float((train.predictions(model, mnist.test).argmax(1) == mnist.test.labels).float().mean())
    mine = {**facts, **lessons.own_model_facts("mine: tiny", model, accuracy)}
    text = fill(_all_text(lesson), mine)
    params = 4 * 9 + 4 + 4 * 14 * 14 * 10 + 10  # worked out by hand: one 3x3 kernel per map, then 784 -> 10
    macs = 28 * 28 * 4 * 9 + 4 * 14 * 14 * 10
    assert sum(p.numel() for p in model.parameters()) == params
    assert (f"**mine: tiny** has {params:,} parameters, does {macs:,} multiply-adds per digit and reads "
            f"{accuracy:.2%} of the test digits right") in text
    assert f"**mine: tiny**: {params:,} parameters to store, {macs:,} multiply-adds" in text
    assert lessons.NO_OWN_MODEL not in text


def test_lesson_8_sets_the_learners_own_models_training_accuracy_beside_its_test_accuracy(course, facts, mnist):
    """Lesson 8's "your model" line: recomputed here with plain torch on the same first training digits and
    the test set; with no model it invites importing one."""
    from digitrec import config, layers

    lesson = _lesson(course, 8)
    assert lessons.NO_OWN_MODEL_GAP in fill(_all_text(lesson), facts)

    spec = layers.parse("flatten linear(10)", name="tiny")
    torch.manual_seed(0)
    model = layers.SpecNet(spec).eval()
    seen = mnist.train.subset(config.OWN_MODEL_TRAIN_DIGITS)

    def accuracy(digits) -> float:
        with torch.no_grad():
            return float((model(digits.images.unsqueeze(1).float() / 255).argmax(1) == digits.labels).float().mean())

    on_train, on_test = accuracy(seen), accuracy(mnist.test)
    text = fill(_all_text(lesson), {**facts, **lessons.own_model_facts("mine: tiny", model, on_test, on_train)})
    assert (f"**mine: tiny** reads {on_train:.2%} of the first {config.OWN_MODEL_TRAIN_DIGITS:,} MNIST training "
            f"digits right and {on_test:.2%} of the test digits: a gap of {(on_train - on_test) * 100:.1f} points") in text
    assert lessons.NO_OWN_MODEL_GAP not in text


def test_lesson_3_counts_the_first_layer_from_the_model(course, nets, facts):
    text = fill(_all_text(_lesson(course, 3)), facts)
    fc_1 = next(r for r in models.describe(nets["fc"]) if r.name == "fc_1")
    hidden = nets["fc"].config.hidden[0]
    assert fc_1.params == 784 * hidden + hidden
    assert f"The first layer alone holds {fc_1.params:,} parameters" in text
    assert f"{fc_1.params:,} {hidden} neurons × 784 weights, plus {hidden} biases." in text


def test_lesson_9_counts_the_convolutions_from_the_model(course, nets, facts):
    text = fill(_all_text(_lesson(course, 9)), facts)
    conv_1_1 = next(r for r in models.describe(nets["cnn"]) if r.name == "conv_1_1")
    assert conv_1_1.params == 10 * 9 + 10
    assert f"the whole layer has just {conv_1_1.params:,} parameters" in text
    assert "produces 10 × 28 × 28 numbers" in text


@pytest.mark.parametrize("name", list(registry.WIDGETS))
def test_every_registered_widget_is_a_keyword_only_function(name):
    function = registry.resolve(name)
    assert callable(function)
    params = inspect.signature(function).parameters
    assert "key" in params
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values()), name
    # Everything but key has a default, so a lesson may name the widget with no parameters at all.
    assert all(p.default is not inspect.Parameter.empty for n, p in params.items() if n != "key"), name


# ---------------------------------------------------------------- the teachers' README


def test_readme_lists_every_widget_with_its_parameters():
    readme = README.read_text(encoding="utf-8")
    table = registry.markdown_table()
    assert table in readme, (
        "lessons/README.md's widget table is out of date: replace it with the output of "
        "`python -m streamlit_app.widgets.registry --update`"
    )
    for name in registry.WIDGETS:
        assert f"| `{name}` |" in readme


def test_registry_table_names_real_parameters():
    table = registry.markdown_table()
    row = table.split("| `conv_arithmetic` |")[1].split("\n")[0]
    assert "`layer=conv_1_1`, `channel=0`, `row=-1`, `col=-1`" in row  # as a lesson writes them
    assert "`my_models=true`" in table and '`net=""`' in table
    assert "`key=" not in table and "`url=" not in table and "`digit=" not in table


# ---------------------------------------------------------------- the parser


def test_parse_a_good_lesson():
    lesson = parse_lesson(GOOD, "03-test.md")
    assert (lesson.number, lesson.slug, lesson.networks, lesson.minutes) == (3, "03-test", ("fc", "cnn"), 5)
    assert [s.title for s in lesson.steps] == ["First step", "Second step"]
    first = lesson.steps[0]
    assert [b.kind for b in first.blocks] == ["text", "widget"]
    assert first.widgets[0].name == "softmax" and first.widgets[0].params == {"net": "cnn"}
    assert first.widgets[0].line == 12
    q = lesson.steps[1].questions[0]
    assert q.prompt == "Is this a question?" and q.line == 16
    assert [(a.text, a.correct, a.feedback) for a in q.answers] == [
        ("Yes", True, "Right."), ("No", False, "It is."), ("Maybe", False, "It is.")]
    assert lesson.placeholders == {"fc.params"}


def test_widget_parameters_become_numbers_and_booleans():
    text = GOOD.replace("::: widget softmax net=cnn", "::: widget x a=3 b=0.5 c=true d=False e=conv_1_1")
    params = parse_lesson(text, "01-x.md").steps[0].widgets[0].params
    assert params == {"a": 3, "b": 0.5, "c": True, "d": False, "e": "conv_1_1"}
    assert type(params["a"]) is int and type(params["c"]) is bool


def _error(text: str, name: str = "04-broken.md") -> str:
    with pytest.raises(LessonError) as e:
        parse_lesson(text, name)
    return str(e.value)


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("minutes: 5", "minutes: five", "04-broken.md, line 5: minutes must be a whole number"),
        ("networks: fc, cnn", "networks: fc, rnn", "04-broken.md, line 4: networks must be"),
        ("title: A test lesson", "titel: A test lesson", "04-broken.md, line 2: unknown front-matter field 'titel'"),
        ("goal: Check the parser.", "goal Check the parser.", "04-broken.md, line 3: front matter lines look like"),
        ("goal: Check the parser.\n", "", "04-broken.md, line 5: the front matter lacks goal"),
    ],
)
def test_broken_front_matter_names_file_and_line(old, new, expected):
    assert old in GOOD
    assert expected in _error(GOOD.replace(old, new, 1))


def test_unclosed_front_matter_and_no_front_matter():
    assert "04-broken.md, line 1: the front-matter block is never closed" in _error(GOOD.replace("---\n\n##", "\n##"))
    assert "04-broken.md, line 1: a lesson starts with a front-matter block" in _error(GOOD[4:])


def test_unknown_directive_names_file_and_line():
    message = _error(GOOD.replace("::: widget softmax net=cnn", "::: widgit softmax"))
    assert "04-broken.md, line 12: unknown directive '::: widgit softmax'" in message


def test_bad_widget_parameter_names_file_and_line():
    assert "04-broken.md, line 12: widget parameter 'net'" in _error(GOOD.replace("net=cnn", "net"))


def test_question_without_a_right_answer_names_file_and_line():
    message = _error(GOOD.replace("- [x] Yes", "- [ ] Yes"))
    assert "04-broken.md, line 16: mark the right answer with '- [x]'" in message


def test_unclosed_question_names_file_and_line():
    message = _error(GOOD.rstrip().removesuffix(":::"))
    assert "04-broken.md, line 16: the question is never closed with ':::'" in message


def test_answer_without_feedback_names_file_and_line():
    assert "04-broken.md, line 16: give every answer feedback" in _error(GOOD.replace(" :: It is.", ""))


def test_text_before_the_first_step_and_bad_file_names():
    assert "04-broken.md, line 7: text before the first step" in _error(GOOD.replace("\n## First step", "Oops\n## First step"))
    assert "NN-slug.md" in _error(GOOD, "convolution.md")


def test_fill_replaces_known_and_rejects_unknown_placeholders():
    assert fill("{{ fc.params }} and {{cnn.params}}", {"fc.params": "13,002", "cnn.params": "7,740"}) == "13,002 and 7,740"
    with pytest.raises(LessonError, match=r"Unknown placeholder \{\{ fc.weights \}\}"):
        fill("{{ fc.weights }}", {"fc.params": "1"})


# ---------------------------------------------------------------- loading a folder


def test_load_lessons_reads_the_folder_named_by_the_environment(tmp_path, monkeypatch):
    (tmp_path / "02-second.md").write_text(GOOD.replace("A test lesson", "Second"), encoding="utf-8")
    (tmp_path / "01-first.md").write_text(GOOD.replace("A test lesson", "First"), encoding="utf-8")
    (tmp_path / "README.md").write_text("# not a lesson", encoding="utf-8")
    monkeypatch.setenv(lessons.LESSONS_ENV, str(tmp_path))
    assert lessons.lessons_dir() == tmp_path
    assert [lesson.title for lesson in load_lessons()] == ["First", "Second"]
    assert load_lessons()[0].path == tmp_path / "01-first.md"
    monkeypatch.delenv(lessons.LESSONS_ENV)
    assert lessons.lessons_dir() == lessons.LESSONS_DIR


def test_load_lessons_fails_on_a_broken_file(tmp_path):
    (tmp_path / "01-good.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "02-broken.md").write_text(GOOD.replace("- [x] Yes", "- [ ] Yes"), encoding="utf-8")
    with pytest.raises(LessonError, match=r"02-broken\.md, line 16: mark the right answer"):
        load_lessons(tmp_path)


@pytest.mark.parametrize("kind", ["invalid-utf8", "broken-link", "folder", "pipe"])
def test_a_lesson_path_that_is_no_readable_text_file_is_a_lesson_error(tmp_path, kind):
    import os

    (tmp_path / "01-good.md").write_text(GOOD, encoding="utf-8")
    bad = tmp_path / "02-b.md"
    if kind == "invalid-utf8":
        bad.write_bytes(GOOD.encode() + b"\n\xff\xfe broken\n")
    elif kind == "broken-link":
        bad.symlink_to(tmp_path / "gone.md")
    elif kind == "folder":
        bad.mkdir()
    else:
        os.mkfifo(bad)  # opening it to read would wait for a writer forever
    expected = {"invalid-utf8": r"02-b\.md, line \d+: the file is not UTF-8", "broken-link": "link to a file that does not exist",
                "folder": r"02-b\.md is a folder", "pipe": "is a named pipe"}[kind]
    with pytest.raises(LessonError, match=expected):
        load_lessons(tmp_path)


def test_load_lessons_fails_on_duplicate_numbers_and_on_an_empty_folder(tmp_path):
    with pytest.raises(LessonError, match="no lessons"):
        load_lessons(tmp_path)
    (tmp_path / "01-a.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "01-b.md").write_text(GOOD, encoding="utf-8")
    with pytest.raises(LessonError, match="share a number"):
        load_lessons(tmp_path)


# ---------------------------------------------------------------- the registry's check


def test_registry_check_reports_unknown_widgets_and_parameters():
    assert "no widget called 'nope'" in registry.check("nope", {})[0]
    assert registry.check("softmax", {"net": "cnn"}) == []
    assert "has no parameter 'bogus'" in registry.check("softmax", {"bogus": 1})[0]
    assert "expects net= to be str" in registry.check("softmax", {"net": 3})[0]
    assert "has no parameter 'url'" in registry.check("conv_arithmetic", {"url": True})[0]  # the page owns the link
    assert registry.check("conv_sandbox", {"padding": 1, "stride": 2}) == []


def test_the_loss_fact_is_exact_even_when_the_probability_underflows():
    """-log p from log_softmax, not from a clamped p: a confident wrong answer's loss is large and exact."""
    import torch

    from digitrec.lessons import digit_facts

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[0.0, 60.0] + [0.0] * 8])  # class 1 at 60, class 0 at 0

    class Confident(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.output = Fixed()

        def forward(self, x):
            return self.output(x)

    facts = digit_facts({"fc": Confident()}, torch.zeros(1, 1, 28, 28), label=0)
    # log(e^60 + 9) - 0 = 60.000...: a clamp at 1e-12 would have said 27.631
    assert facts["digit.fc.loss"] == "60.000"


# ---------------------------------------------------------------- predict, shuffle, links


PREDICT_NUMBER = GOOD.replace("::: widget softmax net=cnn", """::: predict
How many parameters? (a number)
answer: {{ fc.params }}
within: 100
:::

::: widget softmax net=cnn""")

PREDICT_CHOICE = GOOD.replace("::: widget softmax net=cnn", """::: predict
Which network is surer?
- [x] TinyVGG :: It usually is.
- [ ] FCNet
- [ ] Neither
:::

::: widget softmax net=cnn""")


def test_parse_a_number_prediction():
    step = parse_lesson(PREDICT_NUMBER, "03-test.md").steps[0]
    assert [b.kind for b in step.blocks] == ["text", "predict", "widget"]
    p = step.predictions[0]
    assert p.is_number and p.prompt == "How many parameters? (a number)" and p.line == 12
    assert (p.answer, p.within) == ("{{ fc.params }}", 100.0)
    assert "fc.params" in parse_lesson(PREDICT_NUMBER, "03-test.md").placeholders


def test_parse_a_choice_prediction():
    p = parse_lesson(PREDICT_CHOICE, "03-test.md").steps[0].predictions[0]
    assert not p.is_number
    assert [(a.text, a.correct, a.feedback) for a in p.answers] == [
        ("TinyVGG", True, "It usually is."), ("FCNet", False, ""), ("Neither", False, "")]


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("answer: {{ fc.params }}\n", "", "line 12: a prediction needs an 'answer: {{ placeholder }}' line"),
        ("within: 100", "within: lots", "line 12: 'within:' must be a number, got 'lots'"),
        ("How many parameters? (a number)\n", "", "line 12: a prediction needs its text"),
        ("within: 100", "within: 100\n- [x] 13,002", "line 12: a prediction is a number ('answer:' line) or a choice"),
    ],
)
def test_broken_number_predictions_name_file_and_line(old, new, expected):
    assert old in PREDICT_NUMBER
    assert expected in _error(PREDICT_NUMBER.replace(old, new, 1))


def test_an_unclosed_prediction_names_file_and_line():
    cut = PREDICT_NUMBER[: PREDICT_NUMBER.index("within: 100") + len("within: 100\n")]
    assert "04-broken.md, line 12: the prediction is never closed with ':::'" in _error(cut)


def test_broken_choice_predictions_name_file_and_line():
    assert "line 12: mark exactly one choice" in _error(PREDICT_CHOICE.replace("- [ ] FCNet", "- [x] FCNet"))
    assert "line 12: a choice prediction needs at least 3" in _error(PREDICT_CHOICE.replace("- [ ] Neither\n", ""))


def test_a_two_option_question_is_refused():
    assert "04-broken.md, line 16: a question needs its text and at least 3" in _error(GOOD.replace("- [ ] Maybe :: It is.\n", ""))


def test_parse_number_reads_a_filled_answer():
    assert lessons.parse_number("30.1%") == 30.1
    assert lessons.parse_number("13,002") == 13002
    assert lessons.parse_number("−0.186") == -0.186
    assert lessons.parse_number("10 × 28 × 28") == 10
    assert lessons.parse_number("unknown") is None


def test_shuffled_is_a_fixed_permutation_per_seed():
    orders = {tuple(lessons.shuffled(4, f"session{i}|q")) for i in range(40)}
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert len(orders) > 10  # different sessions see different orders
    assert lessons.shuffled(4, "a|q") == lessons.shuffled(4, "a|q")  # a rerun does not reshuffle


def test_find_lesson_by_slug_stem_or_number(course):
    conv = _lesson(course, 9)
    assert lessons.find_lesson(course, "convolution") is conv
    assert lessons.find_lesson(course, "09-convolution") is conv
    assert lessons.find_lesson(course, " Convolution ") is conv
    assert lessons.find_lesson(course, "9") is conv
    assert lessons.find_lesson(course, "99") is None  # a number no lesson has
    assert lessons.find_lesson(course, "²") is None and lessons.find_lesson(course, "nope") is None


def test_two_lessons_with_one_name_are_refused(tmp_path):
    (tmp_path / "01-same.md").write_text(GOOD, encoding="utf-8")
    (tmp_path / "02-same.md").write_text(GOOD, encoding="utf-8")
    with pytest.raises(LessonError, match="share a name"):
        load_lessons(tmp_path)
