"""Lessons: the course in lessons/*.md, one step at a time, with live widgets.

The lesson and step live in the URL (``/lessons?lesson=7&step=4``), so a
teacher can send a link to one step and a reload keeps the learner's place.
A lesson's mistakes (an unknown widget or placeholder, a bad widget parameter)
are shown on the page in a sentence naming the line, never as a traceback.
"""

from __future__ import annotations

import streamlit as st

from digitrec.lessons import Lesson, LessonError, Question, Widget, fill
from streamlit_app import state
from streamlit_app.widgets import registry

NETWORK_NAMES = {"fc": "FCNet", "cnn": "TinyVGG"}


def _go(lesson: int, step: int) -> None:
    st.query_params["lesson"] = str(lesson)
    st.query_params["step"] = str(step)


def _fill(text: str, facts: dict[str, str], lesson: Lesson) -> str:
    """``fill`` that shows an unknown placeholder as an error box and the raw text, not a traceback."""
    try:
        return fill(text, facts)
    except LessonError as e:
        st.error(f"{lesson.slug}.md: {e}")
        return text


def question(q: Question, key: str, facts: dict[str, str], lesson: Lesson) -> None:
    """A check-yourself question: pick an answer, get that answer's feedback."""
    st.markdown("**Check yourself:** " + _fill(q.prompt, facts, lesson))
    labels = [_fill(a.text, facts, lesson) for a in q.answers]
    choice = st.radio("Your answer", range(len(labels)), format_func=lambda i: labels[i], index=None,
                      key=key, label_visibility="collapsed")
    if choice is not None:
        answer = q.answers[choice]
        feedback = _fill(answer.feedback, facts, lesson)
        (st.success if answer.correct else st.warning)(("Right. " if answer.correct else "Not quite. ") + feedback)


def widget(w: Widget, key: str, lesson: Lesson) -> None:
    """Embed the widget a lesson names, or say in a sentence why it cannot be shown."""
    problems = registry.check(w.name, w.params)
    if problems:
        st.error(f"{lesson.slug}.md, line {w.line}: widget {w.name!r} cannot be shown. " + " ".join(problems))
        return
    with st.container(border=True):
        try:
            registry.resolve(w.name)(key=key, **w.params)
        except Exception as e:  # one broken widget must not take the step (and its Next button) down
            st.error(f"The widget {w.name!r} failed: {type(e).__name__}: {e}")
        page = registry.page_of(w.name)
        if page:
            st.page_link(page[0], label=f"Open {page[1]} for more", icon=":material/open_in_new:")


def step_view(lesson: Lesson, index: int, facts: dict[str, str]) -> None:
    step = lesson.steps[index]
    st.subheader(_fill(step.title, facts, lesson))
    for n, block in enumerate(step.blocks):
        key = f"lesson{lesson.number}_s{index}_b{n}"
        if block.kind == "text":
            st.markdown(_fill(block.text, facts, lesson))
        elif block.kind == "question":
            question(block.question, key, facts, lesson)
        else:
            widget(block.widget, key, lesson)


def navigation(lesson: Lesson, index: int, later: list[int]) -> None:
    """Previous / Next (or Next lesson) buttons, and the link to this step."""
    prev_col, mid, next_col = st.columns([1, 3, 1])
    if index > 0 and prev_col.button("← Previous", key="lesson_prev", width="stretch"):
        _go(lesson.number, index)
        st.rerun()
    if index + 1 < len(lesson.steps):
        if next_col.button("Next →", key="lesson_next", type="primary", width="stretch"):
            _go(lesson.number, index + 2)
            st.rerun()
    elif later and next_col.button("Next lesson →", key="lesson_next_lesson", type="primary", width="stretch"):
        _go(later[0], 1)
        st.rerun()
    mid.caption(f"Link to this step: `?lesson={lesson.number}&step={index + 1}`")


def draw() -> None:
    try:
        lessons = state.course()
    except LessonError as e:
        st.error(f"A lesson file could not be read: {e}")
        return
    by_number = {lesson.number: lesson for lesson in lessons}
    number = state.query_int("lesson", lessons[0].number)
    lesson = by_number.get(number, lessons[0])
    index = min(max(state.query_int("step", 1), 1), len(lesson.steps)) - 1
    if str(lesson.number) != st.query_params.get("lesson") or str(index + 1) != st.query_params.get("step"):
        _go(lesson.number, index + 1)

    with st.sidebar:
        # The URL decides the lesson; the box only follows it (set before it is drawn) and, when
        # the learner picks another, moves the URL in its callback, which runs before this script.
        st.session_state["lesson_choice"] = lesson.number
        st.selectbox(
            "Lesson", list(by_number), format_func=lambda n: f"{n}. {by_number[n].title}", key="lesson_choice",
            on_change=lambda: _go(st.session_state["lesson_choice"], 1),
        )
        st.caption(f"{lesson.minutes} minutes · uses {' and '.join(NETWORK_NAMES[n] for n in lesson.networks)}")
        st.markdown("**Steps**")
        st.markdown("\n".join(
            f"{i + 1}. " + (f"**{s.title}**" if i == index else s.title) for i, s in enumerate(lesson.steps)
        ))

    facts = state.lesson_facts()
    st.title(f"{lesson.number}. {lesson.title}")
    st.caption(_fill(lesson.goal, facts, lesson))
    st.progress((index + 1) / len(lesson.steps), text=f"Step {index + 1} of {len(lesson.steps)}")

    body = st.container()
    st.divider()
    # The buttons are drawn before the step, so a widget that stops the script
    # (st.stop: "this needs MNIST") still leaves the learner a way on.
    navigation(lesson, index, [n for n in by_number if n > lesson.number])
    with body:
        step_view(lesson, index, facts)


draw()
