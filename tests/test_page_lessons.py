"""The Lessons page: every step of every lesson renders with its widgets, numbers and
questions; Previous / Next / the lesson box move the place in the URL; a broken
lesson is reported on the page."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from digitrec import lessons
from streamlit_app import state
from tests.pages import APP

COURSE = lessons.load_lessons(lessons.LESSONS_DIR)
GOOD = (Path(__file__).resolve().parent / "test_lessons.py").read_text().split('GOOD = """')[1].split('"""')[0]


BY_NUMBER = {lesson.number: lesson for lesson in COURSE}


def _open(lesson: int | str, step: int, digit: state.Digit | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["lesson"] = str(lesson)
    at.query_params["step"] = str(step)
    if digit is not None:
        at.session_state["digit"] = digit
    at.switch_page("views/lessons.py")
    return at.run()


def _markdown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _key(lesson: lessons.Lesson, index: int, block) -> str:
    return f"lesson{lesson.number}_s{index}_b{lesson.steps[index].blocks.index(block)}"


def _commit(at: AppTest, key: str, prediction: lessons.Prediction, value=None) -> None:
    """Make and commit a prediction the way a learner does: type or pick, then press the button."""
    if prediction.is_number:
        at.number_input(key=f"{key}_input").set_value(1.0 if value is None else value).run()
    else:
        at.radio(key=f"{key}_input").set_value(0 if value is None else value).run()
    at.button(key=f"{key}_commit").click().run()


def _links(at: AppTest) -> list:
    return [p for p in at.get("page_link") if p.proto.label.startswith("Open ")]


def _check_step(at: AppTest, lesson: lessons.Lesson, index: int) -> None:
    """The step renders; the widgets before its first prediction are drawn, those after it wait;
    after committing every prediction, all of them are drawn."""
    where = f"{lesson.slug} step {index + 1}"
    assert not at.exception, f"{where}: {at.exception}"
    assert not at.error, f"{where}: " + " | ".join(e.value for e in at.error)
    step = lesson.steps[index]
    assert at.title[0].value == f"{lesson.number}. {lesson.title}"
    assert step.title in [s.value for s in at.subheader], where
    assert at.get("progress")[0].proto.text == f"Step {index + 1} of {len(lesson.steps)}"
    assert dict(at.query_params)["lesson"] == lesson.name
    assert dict(at.query_params)["step"] == str(index + 1)
    assert "{{" not in _markdown(at) and "}}" not in _markdown(at), where
    kinds = [b.kind for b in step.blocks]
    first = kinds.index("predict") if "predict" in kinds else len(kinds)
    # Every widget shown ran to its end: the link to its explorer page is drawn after it.
    assert len(_links(at)) == kinds[:first].count("widget"), where
    for block in [b for b in step.blocks if b.kind == "predict"]:
        _commit(at, _key(lesson, index, block), block.predict)
        assert not at.exception and not at.error, f"{where}: " + " | ".join(e.value for e in at.error)
    assert len(_links(at)) == len(step.widgets), where
    assert "{{" not in _markdown(at) and "}}" not in _markdown(at), where
    # Every question is a radio with no answer chosen yet.
    keys = {_key(lesson, index, b) for b in step.blocks if b.kind == "question"}
    radios = [r for r in at.radio if r.key in keys]
    assert len(radios) == len(step.questions), where
    assert all(r.value is None for r in radios)


@pytest.mark.parametrize("lesson", COURSE, ids=[lesson.slug for lesson in COURSE])
def test_every_step_renders(lesson):
    at = _open(lesson.name, 1)
    _check_step(at, lesson, 0)
    for index in range(1, len(lesson.steps)):
        at.query_params["step"] = str(index + 1)
        at.run()
        _check_step(at, lesson, index)


def test_numbers_on_the_page_are_the_models_and_the_digits():
    from digitrec import checkpoints, models

    at = _open("fc-versus-cnn", 1)
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
    lesson = BY_NUMBER[5]
    at = _open(5, 1, digit)
    for index in range(len(lesson.steps)):
        at.query_params["step"] = str(index + 1)
        at.run()
        _check_step(at, lesson, index)
        if "{{ digit.label }}" in " ".join(b.text for b in lesson.steps[index].blocks):
            assert "Your digit's label is **unknown**" in _markdown(at)


def test_next_previous_and_next_lesson_move_the_url():
    conv = BY_NUMBER[9]
    at = _open("convolution", 1)
    assert not at.button(key="lesson_next").disabled
    assert not [b for b in at.button if b.key == "lesson_prev"]  # no Previous on the first step
    at.button(key="lesson_next").click().run()
    assert dict(at.query_params)["step"] == "2"
    assert at.subheader[0].value == conv.steps[1].title
    at.button(key="lesson_prev").click().run()
    assert dict(at.query_params)["step"] == "1"
    at.query_params["step"] = str(len(conv.steps))
    at.run()
    assert not [b for b in at.button if b.key == "lesson_next"]
    at.button(key="lesson_next_lesson").click().run()
    following = COURSE[COURSE.index(conv) + 1]
    assert (dict(at.query_params)["lesson"], dict(at.query_params)["step"]) == (following.name, "1")
    assert at.title[0].value.startswith(f"{following.number}. ")


def test_links_by_slug_or_number_and_the_url_keeps_the_slug():
    at = _open(9, 2)  # a number: the lesson's current number
    assert at.title[0].value.startswith("9. ") and dict(at.query_params)["lesson"] == "convolution"
    at = _open("09-convolution", 2)
    assert at.title[0].value.startswith("9. ") and dict(at.query_params)["lesson"] == "convolution"


def test_the_lesson_box_switches_lesson_and_a_bad_url_falls_back():
    at = _open(2, 3)
    at.selectbox(key="lesson_choice").set_value("tinyvgg-end-to-end").run()
    assert (dict(at.query_params)["lesson"], dict(at.query_params)["step"]) == ("tinyvgg-end-to-end", "1")
    assert at.title[0].value.startswith("11. ")
    for missing in (99, "no-such-lesson"):  # no lesson has these
        at = _open(missing, 42)  # the first lesson; step clamped to its steps
        assert not at.exception and not at.error
        assert at.title[0].value.startswith("1. ")
        assert dict(at.query_params)["step"] == str(len(COURSE[0].steps))
        assert dict(at.query_params)["lesson"] == COURSE[0].name


def _question_key(lesson: lessons.Lesson, index: int, q: lessons.Question) -> str:
    return f"lesson{lesson.number}_s{index}_b{next(n for n, b in enumerate(lesson.steps[index].blocks) if b.question is q)}"


def test_answering_a_question_shows_its_feedback():
    lesson = BY_NUMBER[4]
    index = len(lesson.steps) - 1
    at = _open(4, index + 1)
    q = lesson.steps[index].questions[0]
    key = _question_key(lesson, index, q)
    wrong = next(i for i, a in enumerate(q.answers) if not a.correct)
    at.radio(key=key).set_value(wrong).run()
    assert at.warning[0].value == "Not quite. " + q.answers[wrong].feedback
    right = next(i for i, a in enumerate(q.answers) if a.correct)
    at.radio(key=key).set_value(right).run()
    assert at.success[0].value == "Right. " + q.answers[right].feedback


def test_shuffled_options_keep_their_feedback_and_stay_put_on_a_rerun():
    """Each session gets its own order; the option shown at a place gives that option's own feedback."""
    lesson = BY_NUMBER[9]
    index = len(lesson.steps) - 1
    q = lesson.steps[index].questions[1]  # no placeholders: its labels are the answers' texts
    key = _question_key(lesson, index, q)
    orders = set()
    for seed in range(12):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params["lesson"], at.query_params["step"] = "convolution", str(index + 1)
        at.session_state[state.COURSE_SEED_KEY] = f"seed{seed}"
        at.switch_page("views/lessons.py")
        at.run()
        shown = list(at.radio(key=key).options)
        assert sorted(shown) == sorted(a.text for a in q.answers)
        orders.add(tuple(shown))
    assert len(orders) > 1, "the options are never shuffled"
    at.run()
    assert list(at.radio(key=key).options) == shown  # a rerun keeps the order
    for place, label in enumerate(shown):
        answer = next(a for a in q.answers if a.text == label)
        at.radio(key=key).set_value(q.answers.index(answer)).run()
        box = at.success if answer.correct else at.warning
        assert box[0].value.endswith(answer.feedback), (place, label)
        assert list(at.radio(key=key).options) == shown


def test_the_score_counts_correct_first_answers_and_shows_in_the_lesson_list():
    lesson = BY_NUMBER[2]
    index = len(lesson.steps) - 1
    at = _open("flatten", index + 1)
    questions = lesson.steps[index].questions
    first, second = (_question_key(lesson, index, q) for q in questions[:2])
    right = [next(i for i, a in enumerate(q.answers) if a.correct) for q in questions[:2]]
    wrong = next(i for i, a in enumerate(questions[1].answers) if not a.correct)
    at.radio(key=first).set_value(right[0]).run()  # right at the first try
    at.radio(key=second).set_value(wrong).run()  # wrong first...
    at.radio(key=second).set_value(right[1]).run()  # ...then right: still counts as wrong
    assert at.session_state[state.FIRST_ANSWERS_KEY][2] == {first: True, second: False}
    n = len(lesson.questions)
    assert f"your score: 1 of {n} questions right at the first try" in " ".join(c.value for c in at.caption)
    listing = next(m.value for m in at.sidebar.markdown if f"2\\. {lesson.title}" in m.value).splitlines()
    line = next(x for x in listing if f"2\\. {lesson.title}" in x)
    assert line.endswith(f"· **1/{n}** right")
    assert [x for x in listing if "right" in x] == [line]  # no score for lessons not answered yet


def test_a_prediction_hides_the_answer_until_the_learner_commits():
    lesson = BY_NUMBER[10]
    index = next(i for i, s in enumerate(lesson.steps) if s.predictions and s.predictions[0].is_number)
    step = lesson.steps[index]
    block = next(b for b in step.blocks if b.kind == "predict")
    key = _key(lesson, index, block)
    at = _open("relu-and-pooling", index + 1)
    answer = lessons.fill(block.predict.answer, _facts())
    assert answer not in _markdown(at)  # neither the number...
    assert not _links(at)  # ...nor the widget that shows it
    assert at.button(key=f"{key}_commit").disabled  # nothing typed yet: nothing to commit
    at.number_input(key=f"{key}_input").set_value(50.0).run()
    assert answer not in _markdown(at) and not _links(at)  # typing is not committing
    at.button(key=f"{key}_commit").click().run()
    assert not at.exception and not at.error
    revealed = " ".join(x.value for x in [*at.info, *at.success])
    assert "You predicted 50." in revealed and answer in revealed
    truth = lessons.parse_number(answer)
    assert f"off by {abs(50 - truth):.3g}" in revealed
    assert len(_links(at)) == len(step.widgets)  # the widget that shows it is drawn now
    assert answer in _markdown(at)  # and the text after the prediction names it


def _facts() -> dict[str, str]:
    """The facts the page fills from, measured the same way (only the groups lesson 10 needs)."""
    from digitrec import checkpoints, data

    nets = {k: checkpoints.load_pretrained(k).model for k in ("fc", "cnn")}
    facts = lessons.model_facts(nets)
    facts.update(lessons.dataset_facts(nets, data.load_mnist(download=False), ["relu"]))
    return facts


def test_a_choice_prediction_reveals_what_happens():
    lesson = BY_NUMBER[6]
    index = next(i for i, s in enumerate(lesson.steps) if s.predictions and not s.predictions[0].is_number)
    block = next(b for b in lesson.steps[index].blocks if b.kind == "predict")
    key = _key(lesson, index, block)
    at = _open("learning", index + 1)
    assert not _links(at)
    wrong = next(i for i, a in enumerate(block.predict.answers) if not a.correct)
    _commit(at, key, block.predict, wrong)
    right = next(a for a in block.predict.answers if a.correct)
    shown = " ".join(x.value for x in at.info)
    assert f"You predicted: {block.predict.answers[wrong].text}." in shown and right.text in shown
    assert len(_links(at)) == len(lesson.steps[index].widgets)


def test_the_digit_changes_from_the_lessons_sidebar():
    at = _open(3, 1, state.sample_digit(7))
    at.button(key="lesson_digit_4").click().run()
    assert not at.exception
    assert at.session_state["digit"].ref == "sample:4"
    from digitrec import checkpoints

    facts = lessons.digit_facts({"fc": checkpoints.load_pretrained("fc").model}, state.sample_digit(4).x, 4)
    text = " ".join(_markdown(at).split())
    assert f"number {facts['digit.fc.top_neuron']}; its value is {facts['digit.fc.top_value']}" in text
    assert "sample 4" in " ".join(c.value for c in at.caption)
    assert at.title[0].value.startswith("3. ")  # still in the lesson


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


@pytest.mark.parametrize("number, widget", [(6, "live_training"), (12, "race_chart")])
def test_training_widgets_wait_for_their_button(number, widget):
    lesson = BY_NUMBER[number]
    index = next(i for i, s in enumerate(lesson.steps) if widget in [w.name for w in s.widgets])
    at = _open(number, index + 1)
    _check_step(at, lesson, index)
    runs = at.session_state[state.RUNS_KEY] if state.RUNS_KEY in at.session_state else {}
    assert not runs, f"{widget} started training before its button was pressed: {runs}"
    assert any(b.label and "Start" in b.label for b in at.button)
    if widget == "race_chart":  # its 60,000 are the whole training set: the 5,000 validation digits are not trained on
        assert any(c.value.startswith("Both networks: all 55,000 training digits,") for c in at.caption)


def test_lesson_8_sets_an_imported_models_training_accuracy_beside_its_test_accuracy(mnist):
    """With a model of the learner's own, lesson 8's "your model" line gives its numbers (recomputed here
    with plain torch on the same training digits; the test accuracy is the one the import measured)."""
    import torch

    from digitrec import config
    from tests import learner_models

    at = AppTest.from_file(APP, default_timeout=120).run()
    at.switch_page("views/train.py").run()
    data = learner_models.trained("sequential_fc")[1]
    at.file_uploader(key="train_import_file").set_value(("sequential_fc.pth", data, "application/octet-stream")).run()
    (net,) = [n for n in at.session_state["my_models"].values() if n.label.startswith("mine: ")]
    at.query_params["lesson"] = "8"
    at.query_params["step"] = "2"  # "Memorising 300 digits" (steps count from 1)
    at.switch_page("views/lessons.py").run()
    lesson = BY_NUMBER[8]
    for block in [b for b in lesson.steps[1].blocks if b.kind == "predict"]:  # the line comes after a prediction
        _commit(at, _key(lesson, 1, block), block.predict)
    assert not at.exception
    seen = mnist.train.subset(config.OWN_MODEL_TRAIN_DIGITS)
    with torch.no_grad():
        on_train = float((net.model(seen.images.unsqueeze(1).float() / 255).argmax(1) == seen.labels).float().mean())
    assert (f"**mine: sequential_fc** reads {on_train:.2%} of the first {config.OWN_MODEL_TRAIN_DIGITS:,} MNIST "
            f"training digits right and {net.test_accuracy:.2%} of the test digits") in _markdown(at)
