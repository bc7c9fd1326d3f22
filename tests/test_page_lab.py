"""The training lab's lesson widget (AppTest): predict first, then the experiment's variants train for real,
one after the other, and the table and the verdict come from those runs."""

from __future__ import annotations

import pytest

from digitrec import config, lab
from digitrec.runs import RunStatus
from tests.pages import figures

SCRIPT = """
from streamlit_app.widgets.lab import training_lab
training_lab(key="lab", experiment="training-size")
training_lab(key="bad", experiment="no-such-experiment")
"""


def test_predict_then_run_the_training_size_experiment(mnist):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(SCRIPT, default_timeout=60)
    at.run()
    assert not at.exception
    # A wrong experiment name is one sentence, and the rest of the page still works.
    assert any("training_lab: experiment must be one of" in w.value for w in at.warning)
    experiment = lab.EXPERIMENTS["training-size"]
    assert any(experiment.question in m.value for m in at.markdown)
    # Predict first: the run button waits for a prediction.
    assert at.button(key="lab_run").disabled
    at.radio(key="lab_prediction").set_value(experiment.choices[0]).run()
    assert not at.button(key="lab_run").disabled
    at.button(key="lab_run").click().run()
    assert not at.exception
    race = at.session_state["training_runs"]["widget:lab"]
    assert race.join(timeout=300)
    for run in race.runs:
        assert run.join(timeout=60)
    at.run()
    assert not at.exception
    progress = race.progress()
    assert [p.status for p in progress] == [RunStatus.FINISHED, RunStatus.FINISHED]
    assert [p.plan.train_size for p in progress] == [300, config.TRAIN_DIGITS - config.VALIDATION_SIZE]
    assert all(p.step == lab.BASE["max_steps"] for p in progress)
    # The table holds each run's own numbers; the test accuracy is the one measured once at the end.
    table = at.table[0]
    frame = table.value
    small = lab.result_of("300 digits", progress[0])
    assert frame.loc["300 digits", "training accuracy"] == f"{small.train_accuracy:.1%}"
    assert frame.loc["300 digits", "validation accuracy"] == f"{small.validation_accuracy:.1%}"
    assert frame.loc["300 digits", "test accuracy (once, at the end)"] == f"{progress[0].final_test_accuracy:.1%}"
    # The same settings as the lesson's numbers: the widget's runs measure what lab.measure measured.
    measured = lab.run_experiment("training-size", mnist)["300 digits"]
    assert small.validation_accuracy == pytest.approx(measured.validation_accuracy, abs=0.01)
    # The reveal: the prediction beside what the runs say.
    answer = lab.verdict("training-size", {"300 digits": small, "all training digits": lab.result_of("all", progress[1])})
    assert answer == experiment.answer
    assert any(f"these runs say **{answer}**" in i.value for i in at.info)
    curves = figures(at)[0]
    names = [t["name"] for t in curves["data"]]
    assert names == ["300 digits: validation", "300 digits: training", "all training digits: validation",
                     "all training digits: training"]
