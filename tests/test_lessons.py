"""The course: every lesson parses, names real widgets with parameters they take,
uses only known placeholders, and the numbers it shows are the models' own.
Plus unit tests of the lesson format's parser (digitrec.lessons)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from digitrec import checkpoints, lessons, models, samples
from digitrec.lessons import LessonError, fill, load_lessons, parse_lesson
from streamlit_app.widgets import registry

REPO = Path(__file__).resolve().parents[1]
README = REPO / "lessons" / "README.md"
COURSE = [
    "01-image-is-numbers", "02-flatten", "03-one-neuron", "04-relu", "05-softmax-and-loss", "06-learning",
    "07-convolution", "08-relu-and-pooling", "09-tinyvgg-end-to-end", "10-fc-versus-cnn", "11-what-did-it-look-at",
]
# Widgets each lesson must embed (the outline): a lesson that lost one is not the lesson asked for.
REQUIRED_WIDGETS = {
    1: {"digit_input", "digit_numbers", "preprocess_view"},
    2: {"flatten_view"},
    3: {"fc_neuron", "fc_weight_grid"},
    4: {"linear_collapse", "fc_forward_steps"},
    5: {"softmax", "loss"},
    6: {"live_training"},
    7: {"conv_arithmetic", "conv_sandbox"},
    8: {"relu_detail", "pool_detail"},
    9: {"cnn_overview", "cnn_filters", "softmax"},
    10: {"network_table", "race_chart", "shift_test"},
    11: {"attribution_compare", "attribution_classes", "attribution_sanity"},
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
:::
"""


@pytest.fixture(scope="module")
def course() -> list[lessons.Lesson]:
    return load_lessons(lessons.LESSONS_DIR)


@pytest.fixture(scope="module")
def nets() -> dict:
    return {k: checkpoints.load_pretrained(k).model for k in ("fc", "cnn")}


@pytest.fixture(scope="module")
def facts(nets) -> dict[str, str]:
    """What the lessons page fills placeholders from (streamlit_app.state.lesson_facts), built the same way."""
    f = lessons.model_facts(nets)
    f.update(lessons.settings_facts())
    f.update(lessons.digit_facts(nets, samples.sample_digit(7).reshape(1, 1, 28, 28), 7))
    for key in nets:
        f[f"{key}.accuracy"] = f"{checkpoints.load_pretrained(key).info.test_accuracy:.2%}"
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
    return " ".join(" ".join(parts).split())


# ---------------------------------------------------------------- the course files


def test_the_course_is_the_eleven_lessons_in_order(course):
    assert [lesson.slug for lesson in course] == COURSE
    assert [lesson.number for lesson in course] == list(range(1, 12))


@pytest.mark.parametrize("number", range(1, 12))
def test_lesson_shape(course, number):
    lesson = course[number - 1]
    assert 4 <= len(lesson.steps) <= 9, f"{lesson.slug}: {len(lesson.steps)} steps"
    assert lesson.minutes > 0 and lesson.title and lesson.goal
    # It ends with 2-3 check-yourself questions, each with a right answer and feedback on every answer.
    last = lesson.steps[-1].questions
    assert 2 <= len(last) <= 3, f"{lesson.slug}: the last step has {len(last)} questions"
    for q in (q for step in lesson.steps for q in step.questions):
        assert any(a.correct for a in q.answers) and all(a.feedback for a in q.answers)
        # The page says "Right." / "Not quite." itself; feedback that says it too reads "Right. Right: …".
        assert not [a.feedback for a in q.answers if re.match(r"(Right|Not quite|Correct|Wrong)\b", a.feedback)]
    # A live widget in most steps (the closing question step aside).
    with_widget = sum(1 for step in lesson.steps[:-1] if step.widgets)
    assert with_widget * 2 > len(lesson.steps) - 1, f"{lesson.slug}: only {with_widget} steps have a widget"
    assert REQUIRED_WIDGETS[number] <= {w.name for step in lesson.steps for w in step.widgets}


@pytest.mark.parametrize("number", range(1, 12))
def test_every_widget_exists_and_accepts_its_parameters(course, number):
    for step in course[number - 1].steps:
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


@pytest.mark.parametrize("number", range(1, 12))
def test_every_placeholder_is_a_known_fact(course, facts, number):
    lesson = course[number - 1]
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


def test_lesson_10_shows_the_models_own_counts(course, nets, facts):
    text = fill(_all_text(course[9]), facts)
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


def test_lesson_3_counts_the_first_layer_from_the_model(course, nets, facts):
    text = fill(_all_text(course[2]), facts)
    fc_1 = next(r for r in models.describe(nets["fc"]) if r.name == "fc_1")
    hidden = nets["fc"].config.hidden[0]
    assert fc_1.params == 784 * hidden + hidden
    assert f"first layer alone holds {fc_1.params:,} learned numbers" in text
    assert f"{fc_1.params:,} {hidden} neurons × 784 weights, plus {hidden} biases." in text


def test_lesson_7_counts_the_convolutions_from_the_model(course, nets, facts):
    text = fill(_all_text(course[6]), facts)
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
    assert [(a.text, a.correct, a.feedback) for a in q.answers] == [("Yes", True, "Right."), ("No", False, "It is.")]
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
