"""The training lab's lesson widget: predict, then run one experiment's variants and compare them.

Each variant is a real run (``digitrec.engines.make_run``: a worker process) of the Train page's
kind, trained one after the other in the background (``digitrec.race.Race``);
the page only watches. When they have ended, a table shows each one's accuracy
on the digits it trained on, on the held-out validation digits and, measured
once at the end, on the test set; then the learner's prediction is set beside
what the runs say (``digitrec.lab.verdict``).
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from digitrec import engines, lab
from digitrec.errors import DigitrecError
from digitrec.race import Race
from digitrec.runs import RunStatus
from digitrec.viz.lab import lab_curves_figure, shift_accuracy_figure
from streamlit_app import state
from streamlit_app.widgets.training import OPTIMIZER_LABELS, _watch


def _describe(experiment: lab.Experiment) -> str:
    """What every variant shares, in words."""
    base = lab.BASE
    return (f"Each run: {OPTIMIZER_LABELS[base['optimizer']]} at learning rate {base['lr']:g} on FCNet 16-16 "
            f"unless said, {base['max_steps']:,} steps of {base['batch_size']} digits, seed {base['seed']}; "
            f"the variants: {', '.join(experiment.variants)}.")


def _results(experiment: lab.Experiment, race: Race, key: str) -> dict[str, lab.LabResult]:
    """Each ended run's numbers; the shift curves of the "shift" experiments, computed once per race."""
    results = {label: lab.result_of(label, p) for label, p in zip(experiment.variants, race.progress())}
    if experiment.compare != "shift":
        return results
    cache = st.session_state.setdefault(f"{key}_shift", {})
    if id(race) not in cache:
        test = state.require_mnist().test.subset(lab.SHIFT_DIGITS)
        cache.clear()
        cache[id(race)] = {label: tuple(lab.shift_accuracy(run.trained_model(), test, lab.SHIFTS, run.pixel_order))
                           for label, run in zip(experiment.variants, race.runs)}
    return {label: replace(r, shift_accuracy=cache[id(race)][label]) for label, r in results.items()}


def _table(results: dict[str, lab.LabResult], shift: bool) -> pd.DataFrame:
    rows = []
    for r in results.values():
        row = {"variant": r.label, "steps": f"{r.steps:,}", "training digits": f"{r.train_digits:,}",
               "training accuracy": f"{r.train_accuracy:.1%}", "validation accuracy": f"{r.validation_accuracy:.1%}",
               "test accuracy (once, at the end)": f"{r.test_accuracy:.1%}"}
        if shift:
            row["moved 4 px (mean of ±4)"] = f"{lab.mean_far_shift(r):.1%}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def training_lab(*, key: str, experiment: str = "learning-rate") -> None:
    """Predict, then run: one lab experiment (learning rate, training-set size, activation, shuffled pixels,
    augmentation), its variants trained for real and compared on training, validation and test digits."""
    if experiment not in lab.EXPERIMENTS:
        st.warning(f"training_lab: experiment must be one of {', '.join(lab.EXPERIMENTS)} (got {experiment!r}).")
        return
    e = lab.EXPERIMENTS[experiment]
    dataset = state.require_mnist()
    slot = f"widget:{key}"
    engines.prepare()  # a worker waiting before the experiment is run
    current = state.training_run(slot)
    active = current is not None and current.status.active

    st.markdown(f"**{e.title}.** {e.question}")
    st.caption(_describe(e))
    prediction = st.radio("Your prediction", e.choices, index=None, key=f"{key}_prediction", disabled=active)
    run_col, stop_col, _ = st.columns([2, 1, 3])
    run_clicked = run_col.button("Run the experiment", key=f"{key}_run", type="primary", icon=":material/science:",
                                 disabled=prediction is None or active, width="stretch")
    stop_clicked = stop_col.button("Stop", key=f"{key}_stop", icon=":material/stop:", disabled=not active,
                                   width="stretch")
    if prediction is None and current is None:
        st.caption("Predict first: choose an answer, then run the experiment.")
    if run_clicked:
        try:
            # Each variant trains in a worker process, one after the other: the page never trains.
            race = Race([engines.make_run(lab.run_spec(e.values(label)), dataset, owner=state.session_id())
                         for label in e.variants])
        except DigitrecError as err:
            st.warning(str(err))
            return
        state.set_training_run(slot, race)
        st.session_state[f"{key}_predicted"] = prediction
        race.start()
        st.rerun()
    if stop_clicked and current is not None:
        current.stop()
        st.rerun()

    def body(race: Race | None) -> None:
        if race is None:
            return
        progress = race.progress()
        for label, p in zip(e.variants, progress):
            text = (f"{label}: waiting for its turn" if p.status is RunStatus.IDLE else
                    f"{label}: {p.status.value} · step {p.step:,}/{p.total_steps:,}")
            st.progress(p.progress, text=text)
            if p.status is RunStatus.DIVERGED:
                st.warning(f"{label}: {p.message}")
        st.plotly_chart(lab_curves_figure([(label, p.evals) for label, p in zip(e.variants, progress)]),
                        key=f"{key}_curves")
        st.caption(f"Solid: accuracy on {progress[0].eval_size:,} validation digits, held out and never trained on; "
                   f"dotted: on {progress[0].eval_size:,} of the digits each run trains on.")
        if race.status is not RunStatus.FINISHED:
            if race.status is RunStatus.STOPPED:
                st.info("Stopped: run the experiment again to compare all the variants.")
            return
        results = _results(e, race, key)
        shift = e.compare == "shift"
        st.table(_table(results, shift))
        if shift:
            st.plotly_chart(shift_accuracy_figure(lab.SHIFTS, {r.label: r.shift_accuracy for r in results.values()},
                                                  digits=lab.SHIFT_DIGITS), key=f"{key}_shift")
        answer = lab.verdict(experiment, results)
        predicted = st.session_state.get(f"{key}_predicted")
        if predicted == answer:
            st.success(f"You predicted **{predicted}**, and these runs agree.")
        else:
            st.info(f"You predicted **{predicted}**; these runs say **{answer}**.")

    _watch(key=key, slot=slot, body=body)


def augment_preview(*, key: str, shift: int = 2, rotation: float = 10.0, count: int = 6) -> None:
    """The current digit as augmentation shows it to a network: a few random shifts and turns of it."""
    import torch

    from digitrec import config
    from digitrec.data import augment
    from digitrec.viz.lab import digits_row_figure

    problems = []
    if not 0 <= int(shift) <= config.MAX_AUGMENT_SHIFT:
        problems.append(f"shift must be from 0 to {config.MAX_AUGMENT_SHIFT}")
    if not 0 <= float(rotation) <= config.MAX_AUGMENT_ROTATION:
        problems.append(f"rotation must be from 0 to {config.MAX_AUGMENT_ROTATION:g}")
    if not 1 <= int(count) <= 10:
        problems.append("count must be from 1 to 10")
    if problems:
        st.warning("augment_preview: " + "; ".join(problems) + ".")
        return
    digit = state.current_digit()
    generator = torch.Generator().manual_seed(st.session_state.get(f"{key}_draw", 0))
    batch = digit.pixels.reshape(1, 1, 28, 28).expand(int(count), 1, 28, 28)  # (count, 1, 28, 28)
    moved = augment(batch, int(shift), float(rotation), generator=generator)[:, 0]  # (count, 28, 28)
    st.plotly_chart(digits_row_figure([digit.pixels, *moved], ["yours", *[f"draw {i + 1}" for i in range(int(count))]]),
                    key=f"{key}_row", config={"staticPlot": True})
    if st.button("New random draws", key=f"{key}_again", icon=":material/casino:"):
        st.session_state[f"{key}_draw"] = st.session_state.get(f"{key}_draw", 0) + 1
        st.rerun()
    st.caption(f"Each training batch gets fresh draws: moved up to {int(shift)} px and turned up to "
               f"{float(rotation):g}° (`digitrec.data.augment`, the same call the training loop makes).")
