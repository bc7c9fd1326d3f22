"""The race page (AppTest): before a race it shows the networks' cost; a tiny race on a few
hundred real digits charts both networks' validation accuracy (held-out digits) against seconds,
fills the table from the runs (the test accuracy, measured once at the end, among them) and writes
the explanation with the same numbers."""

from __future__ import annotations

import pytest

from digitrec import race
from digitrec.runs import RunStatus
from tests.pages import figures, open_page


def _open():
    return open_page("views/race.py")


def _table(at) -> dict:
    df = next(d.value for d in at.table if "multiply-adds per digit (forward)" in d.value.index)
    return df.to_dict()


def _tiny_race(at):
    """Race on 300 digits in batches of 100 (TinyVGG with 4 channels), to the end; the finished race."""
    at.select_slider(key="race_train_size").set_value(300)
    at.number_input(key="race_batch").set_value(100)
    at.number_input(key="race_channels").set_value(4)
    at.run()
    at.button(key="race_start").click().run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    race_now = at.session_state["training_runs"]["race"]
    assert race_now.join(timeout=240)
    at.run()
    assert not at.exception
    return race_now


def _keys(at, kind: str) -> set[str]:
    return {w.key for w in at.get(kind)}


def test_before_a_race_the_table_shows_parameters_and_multiply_adds():
    at = _open()
    assert any("Start the race" in i.value for i in at.info)
    table = _table(at)
    assert table["FCNet 784-16-16-10"]["parameters"] == "13,002"
    assert table["TinyVGG (10 channels)"]["multiply-adds per digit (forward)"] == "1,133,860"
    assert table["TinyVGG (10 channels)"]["multiply-adds per digit (training step ≈ 3×)"] == "3,401,580"
    # Nothing has been timed yet, so no network has "not reached" anything either.
    assert {table[net]["seconds to 95%"] for net in ("FCNet 784-16-16-10", "TinyVGG (10 channels)")} == {"–"}
    assert any("3× the forward pass" in c.value for c in at.caption)
    # The slider's top is what a race trains on: every training digit but the 5,000 held out for validation.
    assert at.select_slider(key="race_train_size").options[-1] == "all 55,000"


def test_a_tiny_race_charts_both_networks_and_explains_with_its_numbers(mnist):
    at = _open()
    race_now = _tiny_race(at)
    fc, cnn = race_now.progress()
    assert (fc.status, cnn.status) == (RunStatus.FINISHED, RunStatus.FINISHED)
    assert fc.plan == cnn.plan and fc.total_steps == 3  # same digits, batches and evaluation steps

    fig = next(f for f in figures(at) if f["layout"]["yaxis"]["title"]["text"].startswith("validation accuracy"))
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


def test_a_learners_own_model_races_a_preset_from_scratch(mnist):
    """An uploaded model ("mine: NAME") is one contender: it trains from fresh weights with its own layers,
    on the same digits as TinyVGG, and the chart, table and comparison under it carry its numbers."""
    from digitrec import layers, models
    from tests import learner_models

    at = _open()
    at.switch_page("views/train.py").run()
    data = learner_models.trained("sequential_fc")[1]
    at.file_uploader(key="train_import_file").set_value(("sequential_fc.pth", data, "application/octet-stream")).run()
    assert not at.exception
    at.switch_page("views/race.py").run()
    (net_key, net), = ((k, n) for k, n in at.session_state["my_models"].items() if n.label.startswith("mine: "))
    assert f"{net.label} against TinyVGG (convolutional)" in at.selectbox(key="race_contenders").options
    at.selectbox(key="race_contenders").select(f"fcnet:{net_key}").run()
    # Only the racing preset's picker shows: against FCNet no TinyVGG channels, and the other way round.
    assert _keys(at, "selectbox") >= {"race_fc"} and "race_channels" not in _keys(at, "number_input")
    at.selectbox(key="race_contenders").select(f"tinyvgg:{net_key}").run()
    assert "race_fc" not in _keys(at, "selectbox") and "race_channels" in _keys(at, "number_input")
    # Before the race the table already shows the contenders about to race.
    assert "mine: sequential_fc" in _table(at) and "TinyVGG (10 channels)" in _table(at)
    race_now = _tiny_race(at)
    mine, cnn = race_now.progress()
    assert (mine.status, cnn.status) == (RunStatus.FINISHED, RunStatus.FINISHED)
    assert mine.plan == cnn.plan and mine.name == "mine: sequential_fc" and cnn.name == "TinyVGG (4 channels)"
    own_spec = race_now.runs[0].spec.model
    assert isinstance(own_spec, layers.ModelSpec) and own_spec.text() == "flatten linear(40) relu linear(24) relu linear(10)"
    # From scratch: its parameter count is its spec's, and its first evaluation is near chance, not ~90 %.
    assert mine.params == layers.count_params(own_spec) == models.count_params(models.build(own_spec))
    assert mine.evals[0].val_accuracy < 0.5

    fig = next(f for f in figures(at) if f["layout"]["yaxis"]["title"]["text"].startswith("validation accuracy"))
    assert [t["name"] for t in fig["data"]] == ["mine: sequential_fc", "TinyVGG (4 channels)"]
    rows = [race.row_of(mine), race.row_of(cnn)]
    assert _table(at)["mine: sequential_fc"]["parameters"] == f"{mine.params:,}"
    text = race.compare(*rows)
    assert any(m.value == text for m in at.markdown)
    assert f"mine: sequential_fc has {mine.params:,} weights" in text
