"""scale: the race's "scale the task" panel. Counts agree with the app's own networks at 28 px,
the measurements are real timings, and the explanation follows the numbers, whichever way they go."""

from __future__ import annotations

import math
import time

from digitrec import config, models, scale
from digitrec.scale import ScaleRow
from streamlit_app import state
from tests.pages import figures, open_page


def test_at_28_px_grey_the_counts_are_those_of_the_apps_networks():
    fc = models.build(models.FCConfig(hidden=scale.FC_HIDDEN))
    cnn = models.build(models.TinyVGGConfig())
    assert scale.count(scale.fc_net(28, 1), 28, 1)[:2] == (models.count_params(fc), models.count_macs(fc))
    assert scale.count(scale.cnn_net(28, 1), 28, 1)[:2] == (models.count_params(cnn), models.count_macs(cnn))
    # Colour: FCNet's first layer has 3x the inputs; TinyVGG's first filters 3 channels deep.
    assert scale.count(scale.fc_net(28, 3), 28, 3)[0] - models.count_params(fc) == 2 * 784 * 128
    assert scale.count(scale.cnn_net(28, 3), 28, 3)[0] - models.count_params(cnn) == 2 * 9 * config.CNN_CHANNELS


def test_measure_times_both_networks_and_the_explanation_uses_those_numbers():
    rows = scale.measure(channels=3, sizes=(28, 64), steps=1)
    assert [(r.network, r.size) for r in rows] == [("fc", 28), ("cnn", 28), ("fc", 64), ("cnn", 64)]
    assert all(r.fits and math.isfinite(r.seconds_per_1000) and r.seconds_per_1000 > 0 for r in rows)
    fc64 = rows[2]
    assert fc64.params == 64 * 64 * 3 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    e = scale.explain(rows)
    assert f"{rows[0].params:,} → {fc64.params:,}" in e.text
    cnn_faster = [s for s in (28, 64) if rows[(s == 64) * 2 + 1].seconds_per_1000 < rows[(s == 64) * 2].seconds_per_1000]
    assert e.overtakes_at == (cnn_faster[0] if cnn_faster else None)
    assert ("does not hold" in e.text) == (not cnn_faster)


def _row(net, size, params, macs, memory, seconds) -> ScaleRow:
    return ScaleRow(net, size, 1, params, macs, memory, seconds)


def test_explanation_when_the_cnn_overtakes_and_when_fc_does_not_fit():
    rows = [_row("fc", 28, 100, 100, 10, 1.0), _row("cnn", 28, 10, 1000, 10, 3.0),
            _row("fc", 64, 1000, 1000, 10, 9.0), _row("cnn", 64, 20, 5000, 10, 6.0)]
    e = scale.explain(rows)
    assert e.overtakes_at == 64 and "faster per image from 64 px" in e.text and "does not hold" not in e.text
    over = config.MEMORY_BUDGET_BYTES + 1
    rows[2] = _row("fc", 64, 10**9, 10**9, over, math.nan)
    e = scale.explain(rows)
    assert e.fc_too_big_at == 64 and "cannot train here at all" in e.text and "only TinyVGG" in e.text


def test_the_fc_memory_limit_is_where_the_estimate_first_passes_the_budget():
    size = scale.fc_limit_size(3)
    assert scale.memory_bytes(*scale.count(scale.fc_net(size, 3), size, 3)[::2]) > config.MEMORY_BUDGET_BYTES
    smaller = size - max(1, (size - 1) // 16)
    assert scale.memory_bytes(*scale.count(scale.fc_net(smaller, 3), smaller, 3)[::2]) <= config.MEMORY_BUDGET_BYTES


def test_the_race_page_measures_and_explains_on_request():
    at = open_page("views/race.py", timeout=300)
    at.button(key="race_scale_measure").click().run()
    assert not at.exception
    # The timing runs in a process of its own; the page says so and is usable meanwhile.
    assert any("in a process of its own" in i.value for i in at.info)
    deadline = time.monotonic() + 240
    while state.scale_measured(1) is None:
        assert state.scale_measuring(1) or not state.scale_failure(1), state.scale_failure(1)
        assert time.monotonic() < deadline, "the measurement did not finish"
        time.sleep(0.5)
    at.run()
    assert not at.exception
    fig = next(f for f in figures(at) if any(t.get("name") == "FCNet, hidden 128-64" for t in f["data"]))
    assert len([t for t in fig["data"] if t.get("x") == [28, 32, 64, 128]]) == 8  # 2 networks x 4 panels
    text = " ".join(m.value for m in at.markdown)
    assert "**Weights.**" in text and "**Memory.**" in text and "**Speed.**" in text
    assert "The fully connected network here is FCNet, hidden 128-64" in text  # not the race's 784-16-16-10
    assert at.dataframe and len(at.dataframe[0].value) == 8
    # the table names the networks it measured, as the chart does
    assert set(at.dataframe[0].value["network"]) == {"FCNet, hidden 128-64", "TinyVGG, 10 channels"}
