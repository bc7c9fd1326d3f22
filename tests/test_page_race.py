"""The race page (AppTest): before a race it shows the networks' cost; a tiny race on a few
hundred real digits charts both networks' test accuracy against seconds, fills the table
from the runs and writes the explanation with the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from digitrec import race
from digitrec.runs import RunStatus

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app" / "app.py")


def _open():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/race.py")
    at.run()
    assert not at.exception
    return at


def _table(at) -> dict:
    df = next(d.value for d in at.table if "multiply-adds per digit (forward)" in d.value.index)
    return df.to_dict()


def test_before_a_race_the_table_shows_parameters_and_multiply_adds():
    at = _open()
    assert any("Start the race" in i.value for i in at.info)
    table = _table(at)
    assert table["FCNet 784-16-16-10"]["parameters"] == "13,002"
    assert table["TinyVGG (10 channels)"]["multiply-adds per digit (forward)"] == "1,133,860"
    assert table["TinyVGG (10 channels)"]["multiply-adds per digit (training step ≈ 3×)"] == "3,401,580"
    assert any("3× the forward pass" in c.value for c in at.caption)


def test_a_tiny_race_charts_both_networks_and_explains_with_its_numbers(mnist):
    at = _open()
    at.select_slider(key="race_train_size").set_value(300)
    at.number_input(key="race_batch").set_value(100)
    at.number_input(key="race_channels").set_value(4)
    at.run()
    at.button(key="race_start").click().run()
    assert not at.exception and not at.warning
    race_now = at.session_state["training_runs"]["race"]
    assert race_now.join(timeout=240)
    at.run()
    assert not at.exception
    fc, cnn = race_now.progress()
    assert (fc.status, cnn.status) == (RunStatus.FINISHED, RunStatus.FINISHED)
    assert fc.plan == cnn.plan and fc.total_steps == 3  # same digits, batches and evaluation steps

    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    fig = next(f for f in figures if f["layout"]["yaxis"]["title"]["text"].startswith("validation accuracy"))
    names = [t["name"] for t in fig["data"]]
    assert names == ["FCNet 784-16-16-10", "TinyVGG (4 channels)"]
    assert fig["data"][0]["x"] == pytest.approx([e.seconds for e in fc.evals])
    assert fig["data"][1]["y"] == pytest.approx([e.val_accuracy for e in cnn.evals])

    table = _table(at)
    rows = [race.row_of(fc), race.row_of(cnn)]
    expected = race.table(rows)
    for i, name in enumerate(expected["network"]):
        for column, cells in expected.items():
            if column != "network":
                assert table[name][column] == cells[i]
    assert table["FCNet 784-16-16-10"]["final test accuracy"] == f"{fc.final_test_accuracy:.2%}"

    text = race.explain(*rows).text
    assert any(m.value == text for m in at.markdown)
    assert f"{rows[0].samples_per_s:,.0f} digits per second" in text
    assert any("The race is over." in s.value for s in at.success)


def test_invalid_race_settings_are_refused_with_a_sentence():
    at = _open()
    at.text_input(key="race_lr").set_value("-1").run()
    at.button(key="race_start").click().run()
    assert not at.exception
    assert len(at.warning) == 1 and at.warning[0].value.startswith("Cannot train: ")
    assert "learning rate must be above 0" in at.warning[0].value
    assert "training_runs" not in at.session_state
