"""The pages of issue 13 run by AppTest: Inside a unit (biography, interventions), Where a digit lands, Break it.

Numbers on the pages are checked against computations made here, apart from the page's code path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from digitrec import checkpoints, embedding, intervention
from streamlit_app import state
from tests import pages
from tests.pages import figures, values


def open_page(page: str, query: dict[str, str] | None = None, digit=None, mine: state.Network | None = None) -> AppTest:
    """``page`` opened with the URL's ``query``; ``mine``: a network of the session's own, chosen."""
    session = {"my_models": {mine.key: mine}, "net": mine.key} if mine is not None else None
    return pages.open_page(page, digit=digit, query=query, session=session, timeout=300)


def test_biography_of_an_fc_neuron_lists_the_brute_force_top_digits(mnist):
    at = open_page("views/unit.py", {"layer": "fc_1", "unit": "5", "net": "fc"})
    model = checkpoints.load_pretrained("fc").model
    x = mnist.test.images.flatten(1).float() / 255.0  # (10000, 784)
    values = x @ model.fc_1.weight.detach()[5] + model.fc_1.bias.detach()[5]  # neuron 5 before ReLU, all digits
    top = values.topk(9)
    grid = next(f for f in figures(at) if any(a.get("text", "").startswith("#") for a in f["layout"].get("annotations", [])))
    titles = [a["text"] for a in grid["layout"]["annotations"]]
    assert [int(t.split(":")[0][1:]) for t in titles] == top.indices.tolist()
    np.testing.assert_allclose([float(t.split(": ")[1]) for t in titles], top.values.numpy(), atol=0.006)
    fires = float((values > 0).float().mean())
    assert at.metric[0].value == f"{fires:.1%}"


@pytest.fixture(scope="module")
def cnn_dead(mnist) -> dict[str, list[int]]:
    """The pretrained TinyVGG's dead maps, measured here (they change when the weights are retrained)."""
    from digitrec import units

    return units.dead_units(units.statistics(checkpoints.load_pretrained("cnn").model, mnist.test))


def test_a_dead_map_is_named_dead_and_a_bad_url_is_clamped_with_a_toast(cnn_dead):
    layer, ids = next((layer, ids) for layer, ids in cnn_dead.items() if ids)
    at = open_page("views/unit.py", {"layer": layer, "unit": str(ids[0]), "net": "cnn"})
    assert any("is **dead**" in w.value for w in at.warning)
    assert at.metric[0].value == "0.0%"
    at = open_page("views/unit.py", {"layer": "**conv_9_9**", "unit": "99", "net": "cnn"})
    toasts = [t.value for t in at.toast]
    assert any("does not have" in t for t in toasts) and not any("conv_9_9" in t for t in toasts)
    assert at.selectbox(key="unit_bio_layer").value == "conv_1_1"
    assert at.query_params["layer"] == ["conv_1_1"] or at.query_params["layer"] == "conv_1_1"


def test_interventions_change_a_private_copy_only(mnist):
    shared = checkpoints.load_pretrained("fc").model
    before = intervention.fingerprint(shared)
    at = open_page("views/unit.py", {"layer": "fc_2", "unit": "0", "net": "fc"})
    at.radio(key="unit_change_kind").set_value("knock out")
    at.selectbox(key="unit_change_layer").set_value("fc_2")
    at.number_input(key="unit_change_unit").set_value(3)
    at.button(key="FormSubmitter:unit_change_form-Apply the change").click().run()
    assert not at.exception and not at.error
    changed = state_models(at)["changed-fc"].model
    digit = state.sample_digit(7).x  # (1, 1, 28, 28)
    expected = intervention.apply(shared, [intervention.Change("knock out", "fc_2", 3)])
    with torch.inference_mode():
        torch.testing.assert_close(changed(digit), expected(digit))
    probs = next(f for f in figures(at) if any(t.get("name") == "with your changes" for t in f["data"]))
    shown = next(t for t in probs["data"] if t["name"] == "with your changes")["y"]
    np.testing.assert_allclose(shown, torch.softmax(expected(digit), 1)[0].detach().numpy(),
                               atol=1e-5)
    assert intervention.fingerprint(shared) == before  # the cached, shared model is untouched

    # A weight that overflows: one sentence, and the change list stays as it was.
    at.radio(key="unit_change_kind").set_value("set weight")
    at.selectbox(key="unit_change_layer").set_value("fc_1")
    at.number_input(key="unit_change_value").set_value(1e39)
    at.text_input(key="unit_change_rest").set_value("400")
    at.button(key="FormSubmitter:unit_change_form-Apply the change").click().run()
    assert any("too large" in e.value for e in at.error)
    assert len(at.session_state["_unit_changes"]["fc"]) == 1
    at.button(key="unit_change_reset").click().run()
    assert "changed-fc" not in state_models(at)
    assert intervention.fingerprint(shared) == before


def state_models(at: AppTest) -> dict:
    return at.session_state["my_models"] if "my_models" in at.session_state else {}


def test_map_places_a_test_digit_on_its_own_dot(mnist):
    at = open_page("views/map.py", {"net": "fc"}, digit=state.test_digit(42))
    fig = next(f for f in figures(at) if any(t.get("name") == "your digit" for t in f["data"]))
    classes = [t for t in fig["data"] if t["name"] in [str(d) for d in range(10)]]
    assert len(classes) == 10 and sum(len(values(t["x"])) for t in classes) == 10_000
    star = next(t for t in fig["data"] if t["name"] == "your digit")
    own = next(t for t in classes if 42 in values(t["customdata"]))
    i = values(own["customdata"]).index(42)
    assert own["name"] == str(int(mnist.test.labels[42]))
    np.testing.assert_allclose([values(star["x"])[0], values(star["y"])[0]],
                               [values(own["x"])[i], values(own["y"])[i]], atol=1e-3)
    # The neighbours are the closest training digits in the layer's own numbers, computed here apart.
    model = checkpoints.load_pretrained("fc").model
    feats = embedding.representations(model, mnist.train.images[: embedding.NEIGHBOUR_POOL], ["relu_2"])["relu_2"]
    mine = embedding.representations(model, mnist.test.images[42:43], ["relu_2"])["relu_2"]
    nearest = torch.cdist(mine, feats)[0].topk(8, largest=False).indices
    grid = next(f for f in figures(at) if any("distance" in a.get("text", "") for a in f["layout"].get("annotations", [])))
    labels = [int(a["text"].split()[1]) for a in grid["layout"]["annotations"]]
    assert labels == mnist.train.labels[nearest].tolist()
    # The caption's share is the map's own separation score, in a sentence that reads.
    coords = np.zeros((10_000, 2))  # each dot back at its test digit's index (customdata), the map's own order
    for t in classes:
        coords[values(t["customdata"])] = np.column_stack([values(t["x"]), values(t["y"])])
    score = embedding.separation(coords, mnist.test.labels[:10_000])
    assert any(f"For {score:.0%} of the first 2,000 dots, most of their 10 nearest dots on this map are of the "
               f"same class ({embedding.separation_words(score)};" in c.value for c in at.caption)


def test_break_it_edit_flips_the_network_and_noise_counts_add_up():
    at = open_page("views/break_it.py", {"net": "fc"})
    at.radio(key="fool_edit_net").set_value("fc")
    at.selectbox(key="fool_edit_target").set_value(3).run()
    assert not at.exception
    metric = next(m for m in at.metric if m.label.startswith("FCNet (pretrained) on the edited"))
    assert metric.value.startswith("3 ")
    bars = next(f for f in figures(at) if f["data"] and f["data"][0].get("type") == "bar"
                and "noise images" in json.dumps(f["layout"]))
    assert all(sum(t["y"]) == 1000 for t in bars["data"]) and len(bars["data"]) == 2


def test_explorers_link_every_unit_to_its_biography(cnn_dead):
    at = open_page("views/cnn_explorer.py", {"net": "cnn"})
    named = [f"{layer} map{'s' if len(ids) > 1 else ''} " + ", ".join(map(str, ids)) for layer, ids in cnn_dead.items() if ids]
    assert named and any("Dead units" in c.value and all(n in c.value for n in named) for c in at.caption)
    # A learner who last chose FCNet opens a TinyVGG map's biography from the CNN overview.
    at.session_state["net"] = "fc"
    at.selectbox(key="cnn_unit_link_layer").set_value("conv_2_2").run()
    at.selectbox(key="cnn_unit_link_unit").set_value(4).run()
    biography = [label for label in pages.page_links(at) if label.startswith("See the biography")]
    assert biography == ["See the biography of conv_2_2 unit 4"]
    assert pages.page_links(at)[biography[0]].page == "unit"
    pages.follow_link(at, biography[0], "views/unit.py")
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="unit_bio_layer").value == "conv_2_2" and at.selectbox(key="unit_bio_unit").value == 4
    assert at.selectbox(key="net_picker").value == "cnn"
    at = open_page("views/fc_explorer.py", {"net": "fc"})
    assert any("Dead units" in c.value or "No unit of this network is dead" in c.value for c in at.caption)


@pytest.fixture(scope="module")
def my_run_net(mnist) -> state.Network:
    """A network trained here for real (FCNet, 60 steps of 64 MNIST digits, a snapshot every 20), as the Train page's
    "Use it in the explorers" adds it: with its run's snapshots."""
    from digitrec.runs import TrainingRun
    from digitrec.spec import RunSpec
    from digitrec.train import TrainConfig

    spec = RunSpec(checkpoints.load_pretrained("fc").config, TrainConfig(epochs=1, batch_size=64, max_steps=60),
                   snapshot_every=20, eval_every=30, train_size=3840)
    run = TrainingRun(spec, mnist)
    run.start()
    assert run.join(timeout=120)
    p = run.progress()
    model = run.trained_model()
    return state.Network("my-1", "My FCNet (60 steps)", model, model.config, p.final_test_accuracy, p.snapshots)


def _top_titles(at: AppTest) -> list[str]:
    grid = next(f for f in figures(at) if any(a.get("text", "").startswith("#") for a in f["layout"].get("annotations", [])))
    return [a["text"] for a in grid["layout"]["annotations"]]


def _weights_shown(at: AppTest) -> np.ndarray:
    fig = next(f for f in figures(at) if any(a.get("text") == "one weight per pixel" for a in f["layout"].get("annotations", [])))
    z = fig["data"][0]["z"]
    canvas = np.array(values(z) if isinstance(z, dict) else z, dtype=float).reshape(-1)
    return canvas[~np.isnan(canvas)]  # the picture without the blank margin above it


def test_biography_across_your_runs_snapshots(mnist, my_run_net):
    """The slider walks a fc_1 neuron through the run: at step 0 and at the end it shows each network's own top digits
    (brute force on that network's weights) and incoming weights, and they differ."""
    from digitrec.runs import model_at

    at = open_page("views/unit.py", {"layer": "fc_1", "unit": "2"}, mine=my_run_net)
    slider = at.select_slider(key="unit_bio_snapshot_my-1")
    assert slider.value == 3 and "kept 4 snapshots" in " ".join(c.value for c in at.caption)
    x = mnist.test.images.flatten(1).float() / 255.0  # (10000, 784)
    seen = {}
    for i in (3, 0):
        at.select_slider(key="unit_bio_snapshot_my-1").set_value(i).run()
        assert not at.exception, [e.value for e in at.exception]
        model = model_at(my_run_net.model, my_run_net.snapshots[i])
        w, b = model.fc_1.weight.detach()[2], model.fc_1.bias.detach()[2]
        top = (x @ w + b).topk(9).indices.tolist()
        titles = _top_titles(at)
        assert [int(t.split(":")[0][1:]) for t in titles] == top
        np.testing.assert_allclose(_weights_shown(at), w.numpy(), atol=1e-6)
        seen[i] = (titles, _weights_shown(at))
    assert seen[0][0] != seen[3][0] and not np.allclose(seen[0][1], seen[3][1])
