"""Lessons: the course in lessons/*.md, one step at a time, with live widgets.

The lesson and step live in the URL (``/lessons?lesson=convolution&step=4``),
so a teacher can send a link to one step and a reload keeps the learner's
place. The page writes the lesson's slug, so links survive renumbering; a
lesson's number (``?lesson=9``) works too and means its current number.
A lesson's mistakes (an unknown widget or placeholder, a bad widget parameter)
are shown on the page in a sentence naming the line, never as a traceback.

The learner thinks before they see: a "predict" block hides the rest of its
step until they commit to a prediction; questions show their options in an
order shuffled once per session, and the first answer to each counts towards
the lesson's score, shown in the lesson list.
"""

from __future__ import annotations

import streamlit as st

from digitrec.lessons import (Lesson, LessonError, Prediction, Question, Widget, fill, find_lesson, names_own_model,
                              parse_number, shuffled)
from digitrec.viz.digits import digit_figure
from streamlit_app import state
from streamlit_app.widgets import registry
from streamlit_app.widgets.digit_input import compact_picker

NETWORK_NAMES = {"fc": "FCNet", "cnn": "TinyVGG"}


def _go(lesson: Lesson, step: int) -> None:
    st.query_params["lesson"] = lesson.name
    st.query_params["step"] = str(step)


def _fill(text: str, facts: dict[str, str], lesson: Lesson) -> str:
    """``fill`` that shows an unknown placeholder as an error box and the raw text, not a traceback."""
    try:
        return fill(text, facts)
    except LessonError as e:
        st.error(f"{lesson.slug}.md: {e}")
        return text


def _record(lesson: int, key: str, q: Question) -> None:
    """The radio's callback: runs before the page redraws, so the sidebar's score already counts this answer."""
    choice = st.session_state.get(key)
    if choice is not None:
        state.record_answer(lesson, key, q.answers[choice].correct)


def question(q: Question, key: str, facts: dict[str, str], lesson: Lesson) -> None:
    """A check-yourself question: options in this session's order; each keeps its own feedback."""
    st.markdown("**Check yourself:** " + _fill(q.prompt, facts, lesson))
    labels = [_fill(a.text, facts, lesson) for a in q.answers]
    order = shuffled(len(q.answers), state.course_seed() + key)  # indices into q.answers, shown in this order
    choice = st.radio("Your answer", order, format_func=lambda i: labels[i], index=None,
                      key=key, label_visibility="collapsed", on_change=_record, args=(lesson.number, key, q))
    if choice is not None:
        answer = q.answers[choice]
        feedback = _fill(answer.feedback, facts, lesson)
        (st.success if answer.correct else st.warning)(("Right. " if answer.correct else "Not quite. ") + feedback)


def prediction(p: Prediction, key: str, facts: dict[str, str], lesson: Lesson) -> bool:
    """A "predict, then reveal" block; returns True once the learner has committed (the step may go on)."""
    prompt = _fill(p.prompt, facts, lesson)
    committed = state.committed_prediction(key)
    if committed is None:
        with st.container(border=True):
            st.markdown(":material/psychology: **Predict first:** " + prompt)
            if p.is_number:
                value = st.number_input("Your prediction", value=None, step=1.0, key=f"{key}_input",
                                        placeholder="type a number")
            else:
                labels = [_fill(a.text, facts, lesson) for a in p.answers]
                order = shuffled(len(p.answers), state.course_seed() + key)
                value = st.radio("Your prediction", order, format_func=lambda i: labels[i], index=None,
                                 key=f"{key}_input", label_visibility="collapsed")
            if st.button("Commit my prediction", key=f"{key}_commit", type="primary", disabled=value is None):
                state.commit_prediction(key, value)
                st.rerun()
            st.caption("The rest of this step, with the answer, appears once you have committed to a prediction.")
        return False
    if p.is_number:
        answer_text = _fill(p.answer, facts, lesson)
        truth = parse_number(answer_text)
        off = "" if truth is None else f" You were off by {abs(float(committed) - truth):.3g}."
        close = truth is not None and p.within is not None and abs(float(committed) - truth) <= p.within
        (st.success if close else st.info)(
            f"**You predicted {float(committed):g}.** The answer: **{answer_text}**.{off}"
            + (" Close enough: well judged." if close else "")
        )
    else:
        chosen, right = p.answers[int(committed)], next(a for a in p.answers if a.correct)
        text = f"**You predicted: {_fill(chosen.text, facts, lesson)}.** "
        text += ("That is what happens. " if chosen.correct else f"What happens: {_fill(right.text, facts, lesson)}. ")
        feedback = _fill(chosen.feedback or right.feedback, facts, lesson)
        (st.success if chosen.correct else st.info)(text + feedback)
    return True


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


def block_key(lesson: Lesson, step: int, block: int) -> str:
    return f"lesson{lesson.number}_s{step}_b{block}"


def step_view(lesson: Lesson, index: int, facts: dict[str, str]) -> None:
    step = lesson.steps[index]
    st.subheader(_fill(step.title, facts, lesson))
    for n, block in enumerate(step.blocks):
        key = block_key(lesson, index, n)
        if block.kind == "text":
            st.markdown(_fill(block.text, facts, lesson))
            if names_own_model(block.text) and state.own_network() is None:  # its line invites importing one
                st.page_link("views/train.py", label="Import your own model on the Train page",
                             icon=":material/upload_file:")
        elif block.kind == "question":
            question(block.question, key, facts, lesson)
        elif block.kind == "predict":
            if not prediction(block.predict, key, facts, lesson):
                return  # the rest of the step waits for the learner's prediction
        else:
            widget(block.widget, key, lesson)


def navigation(lesson: Lesson, index: int, later: list[Lesson]) -> None:
    """Previous / Next (or Next lesson) buttons, and the link to this step."""
    prev_col, mid, next_col = st.columns([1, 3, 1])
    if index > 0 and prev_col.button("← Previous", key="lesson_prev", width="stretch"):
        _go(lesson, index)
        st.rerun()
    if index + 1 < len(lesson.steps):
        if next_col.button("Next →", key="lesson_next", type="primary", width="stretch"):
            _go(lesson, index + 2)
            st.rerun()
    elif later and next_col.button("Next lesson →", key="lesson_next_lesson", type="primary", width="stretch"):
        _go(later[0], 1)
        st.rerun()
    mid.caption(f"Link to this step: `?lesson={lesson.name}&step={index + 1}`")


def course_list(lessons: list[Lesson], current: Lesson) -> str:
    """Every lesson as a Markdown list, the current one bold, and the learner's score
    (questions right at the first try) beside each lesson they answered questions in."""
    lines = []
    for x in lessons:
        right, answered = state.lesson_score(x.number)
        score = f" · **{right}/{len(x.questions)}** right" if answered else ""
        title = f"{x.number}\\. {x.title}"  # escaped: "- 1. …" would render as a list inside the list
        title = f"**{title}**" if x is current else title
        lines.append(f"- {title}{score}")  # plain text: a link would open a new session, without the scores
    return "\n".join(lines)


def sidebar(lessons: list[Lesson], lesson: Lesson, index: int) -> None:
    by_name = {x.name: x for x in lessons}
    # The URL decides the lesson; the box only follows it (set before it is drawn) and, when
    # the learner picks another, moves the URL in its callback, which runs before this script.
    # (Its labels never change: a label that changed with the score would make a new widget.)
    st.session_state["lesson_choice"] = lesson.name
    st.selectbox(
        "Lesson", list(by_name), format_func=lambda n: f"{by_name[n].number}. {by_name[n].title}",
        key="lesson_choice", on_change=lambda: _go(by_name[st.session_state["lesson_choice"]], 1),
    )
    right, answered = state.lesson_score(lesson.number)
    st.caption(
        f"{lesson.minutes} minutes · uses {' and '.join(NETWORK_NAMES[n] for n in lesson.networks)}"
        + (f" · your score: {right} of {len(lesson.questions)} questions right at the first try" if answered else "")
    )
    with st.expander("The course and your scores", expanded=any(state.lesson_score(x.number)[1] for x in lessons)):
        st.markdown(course_list(lessons, lesson))
    st.markdown("**Steps**")
    st.markdown("\n".join(
        f"{i + 1}. " + (f"**{s.title}**" if i == index else s.title) for i, s in enumerate(lesson.steps)
    ))
    # The learner's digit, changed without leaving the lesson: every widget and {{ digit.* }} follows it.
    digit = state.current_digit()
    st.markdown("**Your digit**")
    st.plotly_chart(digit_figure(digit.pixels, height=150), key="lesson_sidebar_digit")
    st.caption(digit.source + (f" (labelled {digit.label})" if digit.label is not None else ""))
    compact_picker(key="lesson_digit")


def draw() -> None:
    try:
        lessons = state.course()
    except LessonError as e:
        st.error(f"A lesson file could not be read: {e}")
        return
    ref = str(st.query_params.get("lesson", "")).strip()
    lesson = find_lesson(lessons, ref) if ref else lessons[0]
    if lesson is None:
        st.toast(f"There is no lesson {ref[:40]!r} (any more), so this is lesson {lessons[0].number}.")
        lesson = lessons[0]
    index = min(max(state.query_int("step", 1), 1), len(lesson.steps)) - 1
    if lesson.name != st.query_params.get("lesson") or str(index + 1) != st.query_params.get("step"):
        _go(lesson, index + 1)

    with st.sidebar:
        sidebar(lessons, lesson, index)

    facts = state.lesson_facts(lesson.placeholders)
    st.title(f"{lesson.number}. {lesson.title}")
    st.caption(_fill(lesson.goal, facts, lesson))
    st.progress((index + 1) / len(lesson.steps), text=f"Step {index + 1} of {len(lesson.steps)}")

    body = st.container()
    st.divider()
    # The buttons are drawn before the step, so a widget that stops the script
    # (st.stop: "this needs MNIST") still leaves the learner a way on.
    navigation(lesson, index, [x for x in lessons if x.number > lesson.number])
    with body:
        step_view(lesson, index, facts)


draw()
