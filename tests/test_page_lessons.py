"""The Lessons page: every step of every lesson renders with its widgets, numbers and
questions; Previous / Next / the lesson box move the place in the URL; a broken
lesson is reported on the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from digitrec import lessons
from streamlit_app import state

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app" / "app.py")
COURSE = lessons.load_lessons(lessons.LESSONS_DIR)
GOOD = (Path(__file__).resolve().parent / "test_lessons.py").read_text().split('GOOD = """')[1].split('"""')[0]


def _open(lesson: int, step: int, digit: state.Digit | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["lesson"] = str(lesson)
    at.query_params["step"] = str(step)
    if digit is not None:
        at.session_state["digit"] = digit
    at.switch_page("views/lessons.py")
    return at.run()


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _check_step(at: AppTest, lesson: lessons.Lesson, index: int) -> None:
    where = f"{lesson.slug} step {index + 1}"
    assert not at.exception, f"{where}: {at.exception}"
    assert not at.error, f"{where}: " + " | ".join(e.value for e in at.error)
    step = lesson.steps[index]
    assert at.title[0].value == f"{lesson.number}. {lesson.title}"
    assert step.title in [s.value for s in at.subheader], where
    assert at.get("progress")[0].proto.text == f"Step {index + 1} of {len(lesson.steps)}"
    assert dict(at.query_params)["lesson"] == str(lesson.number)
    assert dict(at.query_params)["step"] == str(index + 1)
    assert "{{" not in _markdown(at) and "}}" not in _markdown(at), where
    # Every widget ran to its end: the link to its explorer page is drawn after it.
    links = [p for p in at.get("page_link") if p.proto.label.startswith("Open ")]
    assert len(links) == len(step.widgets), where
    # Every question is a radio with no answer chosen yet.
    keys = {f"lesson{lesson.number}_s{index}_b{n}" for n, b in enumerate(step.blocks) if b.kind == "question"}
    radios = [r for r in at.radio if r.key in keys]
    assert len(radios) == len(step.questions), where
    assert all(r.value is None for r in radios)


@pytest.mark.parametrize("lesson", COURSE, ids=[lesson.slug for lesson in COURSE])
def test_every_step_renders(lesson):
    at = _open(lesson.number, 1)
    _check_step(at, lesson, 0)
    for index in range(1, len(lesson.steps)):
        at.query_params["step"] = str(index + 1)
        at.run()
        _check_step(at, lesson, index)


def test_numbers_on_the_page_are_the_models_and_the_digits():
    from digitrec import checkpoints, models

    at = _open(10, 1)
    text = " ".join(_markdown(at).split())
    fc, cnn = (checkpoints.load_pretrained(k).model for k in ("fc", "cnn"))
    assert f"FCNet has {models.count_params(fc):,} parameters; TinyVGG has {models.count_params(cnn):,}" in text
    at = _open(3, 1, state.sample_digit(4))
    text = " ".join(_markdown(at).split())
    facts = lessons.digit_facts({"fc": fc}, state.sample_digit(4).x, 4)
    assert f"number {facts['digit.fc.top_neuron']}; its value is {facts['digit.fc.top_value']}" in text


def test_a_drawn_digit_without_a_label_renders_the_loss_lesson():
    import torch

    pixels = torch.zeros(28, 28)
    pixels[6:22, 13:16] = 1.0  # a thick vertical bar: something like a 1
    digit = state.pixels_digit(pixels, "your drawing")
    lesson = COURSE[4]
    at = _open(5, 1, digit)
    for index in range(len(lesson.steps)):
        at.query_params["step"] = str(index + 1)
        at.run()
        _check_step(at, lesson, index)
        if "{{ digit.label }}" in " ".join(b.text for b in lesson.steps[index].blocks):
            assert "Your digit's label is **unknown**" in _markdown(at)


def test_next_previous_and_next_lesson_move_the_url():
    at = _open(7, 1)
    assert not at.button(key="lesson_next").disabled
    assert not [b for b in at.button if b.key == "lesson_prev"]  # no Previous on the first step
    at.button(key="lesson_next").click().run()
    assert dict(at.query_params)["step"] == "2"
    assert at.subheader[0].value == COURSE[6].steps[1].title
    at.button(key="lesson_prev").click().run()
    assert dict(at.query_params)["step"] == "1"
    last = len(COURSE[6].steps)
    at.query_params["step"] = str(last)
    at.run()
    assert not [b for b in at.button if b.key == "lesson_next"]
    at.button(key="lesson_next_lesson").click().run()
    assert (dict(at.query_params)["lesson"], dict(at.query_params)["step"]) == ("8", "1")
    assert at.title[0].value.startswith("8. ")


def test_the_lesson_box_switches_lesson_and_a_bad_url_falls_back():
    at = _open(2, 3)
    at.selectbox(key="lesson_choice").set_value(9).run()
    assert (dict(at.query_params)["lesson"], dict(at.query_params)["step"]) == ("9", "1")
    assert at.title[0].value.startswith("9. ")
    at = _open(99, 42)  # no lesson 99: the first lesson; step clamped to its steps
    assert not at.exception
    assert at.title[0].value.startswith("1. ")
    assert dict(at.query_params)["step"] == str(len(COURSE[0].steps))


def test_answering_a_question_shows_its_feedback():
    lesson = COURSE[3]
    index = len(lesson.steps) - 1
    at = _open(4, index + 1)
    q = lesson.steps[index].questions[0]
    key = f"lesson4_s{index}_b{next(n for n, b in enumerate(lesson.steps[index].blocks) if b.question is q)}"
    radio = at.radio(key=key)
    wrong = next(i for i, a in enumerate(q.answers) if not a.correct)
    radio.set_value(wrong).run()
    assert at.warning[0].value == "Not quite. " + q.answers[wrong].feedback
    right = next(i for i, a in enumerate(q.answers) if a.correct)
    at.radio(key=key).set_value(right).run()
    assert at.success[0].value == "Right. " + q.answers[right].feedback


# ---------------------------------------------------------------- a teacher's mistakes, on the page


def _lessons_folder(tmp_path: Path, monkeypatch, text: str) -> None:
    (tmp_path / "01-test.md").write_text(text, encoding="utf-8")
    monkeypatch.setenv(lessons.LESSONS_ENV, str(tmp_path))


def test_an_unknown_widget_is_named_on_the_page(tmp_path, monkeypatch):
    _lessons_folder(tmp_path, monkeypatch, GOOD.replace("::: widget softmax net=cnn", "::: widget no_such_widget"))
    at = _open(1, 1)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "01-test.md, line 12" in errors[0] and "'no_such_widget'" in errors[0]
    assert at.subheader[0].value == "First step"  # the rest of the step still renders
    assert not at.button(key="lesson_next").disabled


def test_a_bad_widget_parameter_and_placeholder_are_named_on_the_page(tmp_path, monkeypatch):
    text = GOOD.replace("net=cnn", "colour=red").replace("{{ fc.params }}", "{{ fc.paramz }}")
    _lessons_folder(tmp_path, monkeypatch, text)
    at = _open(1, 1)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "{{ fc.paramz }}" in errors
    assert "line 12" in errors and "'softmax' has no parameter 'colour'" in errors


def test_a_broken_lesson_file_is_reported_on_the_page(tmp_path, monkeypatch):
    _lessons_folder(tmp_path, monkeypatch, GOOD.replace("- [x] Yes", "- [ ] Yes"))
    at = _open(1, 1)
    assert not at.exception
    assert "01-test.md, line 16: mark the right answer" in at.error[0].value


def test_a_broken_link_or_a_folder_in_the_lessons_is_reported_on_the_page(tmp_path, monkeypatch):
    _lessons_folder(tmp_path, monkeypatch, GOOD)
    (tmp_path / "02-b.md").symlink_to(tmp_path / "gone.md")
    at = _open(1, 1)
    assert not at.exception
    assert "02-b.md is a link to a file that does not exist" in at.error[0].value


@pytest.mark.parametrize("number, widget", [(6, "live_training"), (10, "race_chart")])
def test_training_widgets_wait_for_their_button(number, widget):
    lesson = COURSE[number - 1]
    index = next(i for i, s in enumerate(lesson.steps) if widget in [w.name for w in s.widgets])
    at = _open(number, index + 1)
    _check_step(at, lesson, index)
    runs = at.session_state[state.RUNS_KEY] if state.RUNS_KEY in at.session_state else {}
    assert not runs, f"{widget} started training before its button was pressed: {runs}"
    assert any(b.label and "Start" in b.label for b in at.button)
