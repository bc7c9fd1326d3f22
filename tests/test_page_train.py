"""The Train page (AppTest): a tiny run on a few hundred real digits shows its curves, the
buttons drive the run, invalid settings are refused with a sentence, the run belongs to
its session and survives a page switch, and the trained model can be kept and reloaded."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from digitrec import checkpoints
from digitrec.runs import TUNED_NOT_REDRAWN, RunStatus
from tests.helpers import wait_until
from tests.pages import array, figures, follow_link, open_page, page_links


def _open():
    return open_page("views/train.py")


def _tiny(at, batch: int = 32, epochs: int = 1) -> None:
    """300 real digits: 10 steps an epoch at batch size 32."""
    at.select_slider(key="train_train_size").set_value(300)
    at.number_input(key="train_batch").set_value(batch)
    at.number_input(key="train_epochs").set_value(epochs)
    at.run()  # as in a browser: each change reruns the page before a button is pressed


def _run(at):
    return at.session_state["training_runs"]["train"]


def _train_to_the_end(at):
    """Press Start with the settings on the page, wait for the run to end, rerun the page; the ended run."""
    at.button(key="train_start").click().run()
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    run = _run(at)
    assert run.join(timeout=180)
    at.run()
    assert not at.exception
    return run


@contextmanager
def _long_run(at):
    """A 20-epoch run started from the page, for a test to watch while it trains; stopped and joined afterwards."""
    _tiny(at, epochs=20)
    at.button(key="train_start").click().run()
    run = _run(at)
    try:
        yield run
    finally:
        run.stop()
        assert run.join(timeout=180)


def _curves(at) -> dict:
    return next(f for f in figures(at) if any(t.get("name") == "loss of each batch" for t in f["data"]))


def _trace(fig: dict, name_start: str) -> dict:
    return next(t for t in fig["data"] if t.get("name", "").startswith(name_start))


def _run_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("digitrec-run") and t.is_alive())


def test_a_tiny_run_shows_its_curves_probe_and_weights(mnist):
    at = _open()
    assert at.info and "press **Start**" in at.info[0].value
    _tiny(at, epochs=2)
    at.text_input(key="train_lr").set_value("0.005").run()
    run = _train_to_the_end(at)
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.step == 20 and p.plan.train_size == 300

    fig = _curves(at)
    loss = _trace(fig, "loss of each batch")
    assert loss["x"] == list(range(1, 21))
    assert loss["y"] == pytest.approx([s.loss for s in p.steps])
    test = _trace(fig, "validation accuracy (2,000")
    assert test["y"] == pytest.approx([e.val_accuracy for e in p.evals]) and test["x"][0] == 0
    per_epoch = _trace(fig, "validation accuracy after each epoch")
    assert per_epoch["y"] == pytest.approx([e.val_accuracy for e in p.epoch_results]) and len(per_epoch["y"]) == 2
    # Learning happened: the last test point beats chance by far on 300 training digits.
    assert p.evals[-1].val_accuracy > 0.4 > p.evals[0].val_accuracy

    charts = figures(at)
    bars = [f for f in charts if f["data"] and f["data"][0]["type"] == "bar"]
    assert bars and bars[0]["data"][0]["y"] == pytest.approx(p.probe_probs.tolist(), abs=1e-6)
    heatmaps = [f for f in charts if f["data"][0]["type"] == "heatmap" and "first layer" in str(f["layout"].get("title"))]
    assert heatmaps and "all 16 neurons" in heatmaps[0]["layout"]["title"]["text"]
    # The tiles are the live first-layer weights: neuron 1 top left, neuron 2 beside it (4 x 4 grid, 2-cell gaps).
    z = array(heatmaps[0]["data"][0]["z"])
    assert z.shape == (4 * 30 - 2, 4 * 30 - 2)
    assert np.array_equal(z[:28, :28], p.first_layer[0].numpy())
    assert np.array_equal(z[:28, 30:58], p.first_layer[1].numpy())
    assert np.isnan(z[:28, 28:30]).all()  # the gap
    assert heatmaps[0]["data"][0]["zmin"] == -heatmaps[0]["data"][0]["zmax"]  # centred at zero
    assert any("Finished: 20 steps" in s.value for s in at.success)
    # Ended: the replay slider and the export appear.
    slider = at.select_slider(key="train_replay_at")
    assert slider.value == len(p.snapshots) - 1
    # the caption counts the snapshots the run took, not only the cadence it planned (the budget may delay some)
    assert any(c.value.startswith(f"{len(p.snapshots)} snapshots, at most one every {p.plan.snapshot_every:,} steps")
               for c in at.caption)
    assert at.download_button(key="train_export_download") is not None


def test_a_tinyvgg_runs_filters_say_how_alike_they_stay_to_their_start(mnist):
    """The caption under TinyVGG's 3 x 3 filters gives the cosine similarity of each filter now and at the
    run's step 0, recomputed here from the run's own snapshots."""
    at = _open()
    at.radio(key="train_arch").set_value("tinyvgg").run()
    _tiny(at)
    at.text_input(key="train_lr").set_value("0.01").run()
    p = _train_to_the_end(at).progress()
    start, now = p.snapshots[0].first_layer.flatten(1), p.first_layer.flatten(1)
    alike = [float(torch.dot(a.double(), b.double()) / (a.double().norm() * b.double().norm())) for a, b in zip(start, now)]
    assert max(alike) < 1 - 1e-6  # the run changed every filter it trained
    caption = next(c.value for c in at.caption if c.value.startswith("Each square is one 3×3 filter"))
    assert f"each is now {min(alike):.2f} to {max(alike):.2f} alike" in caption
    assert ("tuned every filter" in caption) == (min(alike) >= TUNED_NOT_REDRAWN)
    # Replayed at step 0, the filters are their own start: the replay claims no likeness (the live view above keeps its own).
    def alike_captions():
        return sum("alike" in c.value for c in at.caption if c.value.startswith("Each square is one 3×3 filter"))

    before = alike_captions()
    at.select_slider(key="train_replay_at").set_value(0).run()
    assert not at.exception and alike_captions() == before - 1


def test_replay_shows_the_network_at_a_snapshot(mnist):
    at = _open()
    _tiny(at)
    run = _train_to_the_end(at)
    snaps = run.progress().snapshots
    at.select_slider(key="train_replay_at").set_value(0).run()
    assert not at.exception
    assert any("**Step 0**" in m.value for m in at.markdown)
    bars = [f for f in figures(at) if f["data"] and f["data"][0]["type"] == "bar" and f["data"][0]["name"] == "step 0"]
    assert bars and bars[0]["data"][0]["y"] == pytest.approx(snaps[0].probe_probs.tolist(), abs=1e-6)


@pytest.mark.parametrize(
    "setting, value, words",
    [
        ("train_lr", "fast", "the learning rate must be a number like 0.001 or 1e-3 (got 'fast')"),
        ("train_lr", "0", "learning rate must be above 0"),
        ("train_widths", "16, x", "hidden widths must be whole numbers separated by commas"),
    ],
)
def test_invalid_settings_are_refused_with_a_sentence_before_training(setting, value, words):
    at = _open()
    if setting == "train_widths":
        at.selectbox(key="train_preset").set_value("custom widths").run()
    at.text_input(key=setting).set_value(value)
    before = _run_threads()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert len(at.warning) == 1 and at.warning[0].value.startswith("Cannot train: ")
    assert words in at.warning[0].value
    assert "training_runs" not in at.session_state or "train" not in at.session_state["training_runs"]
    assert _run_threads() == before


def test_step_epoch_stop_buttons_drive_the_run(mnist):
    at = _open()
    _tiny(at, epochs=3)
    at.button(key="train_step").click().run()  # starts a paused run and trains one batch
    run = _run(at)
    _wait(lambda: run.progress().step == 1 and run.status is RunStatus.PAUSED)
    at.run()
    assert not at.exception and any("Paused after step 1" in i.value for i in at.info)
    assert at.button(key="train_resume").disabled is False and at.button(key="train_pause").disabled is True
    assert at.button(key="train_start").disabled is True

    at.button(key="train_epoch").click().run()  # to the end of epoch 1
    _wait(lambda: run.progress().step == 10 and run.status is RunStatus.PAUSED)
    at.button(key="train_stop").click().run()
    assert run.join(timeout=180)
    at.run()
    p = run.progress()
    assert p.status is RunStatus.STOPPED and p.step == 10
    assert any("Stopped after step 10 of 30" in i.value for i in at.info)
    assert at.button(key="train_start").disabled is False


def test_leaving_the_page_and_coming_back_keeps_one_run_and_sessions_are_separate(mnist):
    at = _open()
    with _long_run(at) as run:
        threads = _run_threads()
        at.switch_page("views/home.py").run()
        assert run.status.active  # leaving does not stop it
        at.switch_page("views/train.py").run()
        assert not at.exception
        assert _run(at) is run and _run_threads() == threads  # nor start another
        assert at.select_slider(key="train_train_size").value == 300  # the settings were kept
        assert at.select_slider(key="train_train_size").disabled  # and locked while it trains

        other = _open()  # another browser session sees no run and controls none
        assert "training_runs" not in other.session_state
        assert other.info and "press **Start**" in other.info[0].value
        assert other.button(key="train_stop").disabled and other.button(key="train_pause").disabled


def test_the_trained_model_joins_the_explorers_and_a_download_loads_again(mnist):
    at = _open()
    _tiny(at)
    run = _train_to_the_end(at)
    at.button(key="train_export_use").click().run()
    assert not at.exception
    mine = at.session_state["my_models"]
    assert list(mine) == ["my-1"]
    net = mine["my-1"]
    assert net.label.startswith("My FCNet 784-16-16-10 (10 steps")
    trained = run.trained_model()  # the weights the worker process sent back
    assert all(torch.equal(a, b) for a, b in zip(net.model.parameters(), trained.parameters()))
    assert net.model is not trained and net.test_accuracy == run.progress().final_test_accuracy
    # The explorers and "Inside a unit" open on it: it is the session's choice, and the links carry it.
    assert at.session_state["net"] == "my-1" and at.query_params["net"] == "my-1"
    links = page_links(at)  # the sidebar has one of its own
    explorer, unit = links["Open it in the explorer"], links["Watch one unit form across the run"]
    assert (explorer.page, unit.page) == ("fc", "unit")
    assert explorer.query_string == unit.query_string == "net=my-1"

    # The learner picks another network in an explorer, comes back, and follows the link: the unit page
    # shows the run's network (with its snapshot slider), not the one picked since.
    at.switch_page("views/fc_explorer.py").run()
    at.selectbox(key="net_picker").set_value("fc").run()
    assert at.session_state["net"] == "fc" and not at.exception
    at.switch_page("views/train.py").run()
    follow_link(at, "Watch one unit form across the run", "views/unit.py")
    assert not at.exception
    assert at.session_state["net"] == "my-1" and at.selectbox(key="net_picker").value == "my-1"
    assert at.select_slider(key="unit_bio_snapshot_my-1").label == "Your run, at"  # the slider over its snapshots
    at.switch_page("views/train.py").run()

    # The download's bytes are a checkpoint; uploading them adds the same network again.
    data = run.checkpoint_bytes()
    at.file_uploader(key="train_upload_file").set_value(("mine.safetensors", data, "application/octet-stream")).run()
    assert not at.exception
    assert any("Loaded **My FCNet 784-16-16-10 (uploaded" in s.value for s in at.success)
    uploaded = at.session_state["my_models"]["my-2"]
    assert all(torch.equal(a, b) for a, b in zip(uploaded.model.parameters(), trained.parameters()))
    assert checkpoints.load_bytes(data).info.test_accuracy == pytest.approx(net.test_accuracy)


def test_a_wrong_upload_shows_the_checkpoint_error_sentence():
    at = _open()
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    at.file_uploader(key="train_upload_file").set_value(("digit.png", png, "image/png")).run()
    assert not at.exception
    assert len(at.warning) == 1
    assert r"digit\.png is not a safetensors file (it is a PNG image)" in at.warning[0].value  # name escaped
    assert "my_models" not in at.session_state or not at.session_state["my_models"]


def test_the_same_checkpoint_uploaded_again_is_reused_and_a_session_keeps_at_most_four():
    from digitrec import models
    from streamlit_app import state

    def ckpt(seed: int) -> bytes:
        return checkpoints.to_bytes(models.build(models.FCConfig(), seed=seed), test_accuracy=None, epochs=1, seed=seed)

    at = _open()
    uploader = lambda name, data: at.file_uploader(key="train_upload_file").set_value(  # noqa: E731
        (name, data, "application/octet-stream")).run()
    same = ckpt(0)
    for name in ("a.safetensors", "a (1).safetensors", "a.safetensors"):  # each a new upload of one file
        uploader(name, same)
        assert not at.exception
    assert list(at.session_state["my_models"]) == ["my-1"]

    for seed in range(1, state.MAX_MY_MODELS):
        uploader(f"m{seed}.safetensors", ckpt(seed))
    assert len(at.session_state["my_models"]) == state.MAX_MY_MODELS
    uploader("one-too-many.safetensors", ckpt(99))
    assert not at.exception
    assert any("the most one session keeps" in w.value for w in at.warning)
    assert len(at.session_state["my_models"]) == state.MAX_MY_MODELS  # nothing was dropped either


def _wait(predicate) -> None:
    wait_until(predicate, timeout=180.0)


LESSON_SCRIPT = """
from streamlit_app.widgets import training
from streamlit_app.widgets.training import live_training, race_chart
training.LESSON_SECONDS = 1.0  # the lesson slows its run to ~15 s so a learner can watch; a test need not
live_training(key="lesson6", steps=20, batch_size=32)
race_chart(key="race_widget", train_size=300, batch_size=100)
"""


def test_the_lesson_widgets_train_live_and_race(mnist):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(LESSON_SCRIPT, default_timeout=60)
    at.run()
    assert not at.exception
    assert not [b for b in at.button if b.key == "lesson6_step"]  # no stepping in the lesson's compact controls
    at.button(key="lesson6_start").click().run()
    run = at.session_state["training_runs"]["widget:lesson6"]
    assert run.join(timeout=180)
    at.run()
    assert not at.exception
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.step == 20 and p.plan.train_size == 55000  # max_steps ends it
    loss = _trace(_curves(at), "loss of each batch")
    assert loss["x"] == list(range(1, 21))
    assert any("first layer" in str(f["layout"].get("title")) for f in figures(at))

    at.button(key="race_widget_start").click().run()
    race_now = at.session_state["training_runs"]["widget:race_widget"]
    assert race_now.join(timeout=240)
    at.run()
    assert not at.exception
    assert [p.status for p in race_now.progress()] == [RunStatus.FINISHED, RunStatus.FINISHED]
    assert any(m.value.startswith("**Why the CNN costs more per digit.**") for m in at.markdown)


def test_the_probe_picture_stays_the_runs_digit_after_the_current_digit_changes(mnist):
    from streamlit_app import state

    at = _open()
    at.session_state["digit"] = state.sample_digit(3)
    at.run()
    _tiny(at)
    at.button(key="train_start").click().run()
    run = _run(at)
    assert run.join(timeout=180)
    at.session_state["digit"] = state.sample_digit(5)  # the learner picks another digit afterwards
    at.run()
    assert not at.exception
    want = state.sample_digit(3).pixels.reshape(-1).numpy()
    heatmaps = [array(t["z"]).reshape(-1) for f in figures(at) for t in f["data"] if t["type"] == "heatmap"]
    pictures = [z for z in heatmaps if z.shape == want.shape and np.allclose(z, want, atol=1e-6)]
    assert pictures, "the probe picture should still show sample 3, the digit the run was started with"
    assert any("when this run started" in c.value for c in at.caption)


def test_a_worker_runs_progress_shows_after_each_page_rerun(mnist):
    import re

    at = _open()
    with _long_run(at) as run:
        _wait(lambda: run.progress().step > 0)  # the worker process has started and reported

        def shown_step() -> int:
            at.run()  # a rerun, as a click elsewhere on the page makes
            assert not at.exception
            text = at.get("progress")[0].proto.text
            return int(re.search(r"step ([\d,]+)/", text).group(1).replace(",", ""))

        first = shown_step()
        assert first > 0 and run.pid is not None and run.pid != __import__("os").getpid()
        # It says where the worker trains: the GPU where the server has one.
        from digitrec.engines.local import training_device
        from digitrec.runs import device_words

        assert f"digits/s on the {device_words(training_device())} ·" in at.get("progress")[0].proto.text
        _wait(lambda: run.progress().step > first + 5)
        assert shown_step() > first  # each rerun reads the worker's latest report


def test_a_run_beyond_the_servers_slots_shows_its_place_in_line(mnist, monkeypatch):
    from digitrec.engines import queue

    monkeypatch.setattr(queue, "_DEFAULT", queue.RunQueue(1))  # a server that trains one run at a time
    first, second = _open(), _open()  # two learners
    for at in (first, second):
        _tiny(at, epochs=20)
        at.button(key="train_start").click().run()
        assert not at.exception
    runs = [_run(first), _run(second)]
    try:
        assert runs[1].status is RunStatus.QUEUED and runs[1].pid is None
        assert any("**1 in line**" in i.value for i in second.info)
        assert second.button(key="train_stop").disabled is False  # a waiting run can be withdrawn
        second.button(key="train_stop").click().run()
        assert runs[1].status is RunStatus.STOPPED and runs[1].pid is None  # it never started a process
    finally:
        for run in runs:
            run.stop()
        assert all(run.join(timeout=180) for run in runs)


# --- the lab controls --------------------------------------------------------------------------------


def test_the_lab_controls_train_what_they_say_and_the_test_set_is_used_once(mnist):
    from digitrec import config, data, train

    at = _open()
    _tiny(at)
    at.selectbox(key="train_optimizer").set_value("sgd").run()
    # The optimizer's one-sentence explanation sits where it is chosen.
    assert any(c.value == config.OPTIMIZER_EXPLANATIONS["sgd"] for c in at.caption)
    at.radio(key="train_activation").set_value("none")
    at.select_slider(key="train_augment_shift").set_value(2)
    at.select_slider(key="train_augment_rotation").set_value(10)
    at.toggle(key="train_shuffle").set_value(True)
    at.text_input(key="train_lr").set_value("0.1").run()
    run = _train_to_the_end(at)
    spec = run.spec
    assert spec.model.activation == "none" and spec.train.optimizer == "sgd" and spec.train.lr == 0.1
    assert (spec.train.augment_shift, spec.train.augment_rotation, spec.train.shuffle_pixels) == (2, 10.0, True)
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.plan.train_size == 300
    # The curves show training and validation together, measured on the run's fixed subsets.
    fig = _curves(at)
    validation = _trace(fig, "validation accuracy (2,000")
    training = _trace(fig, "training accuracy (300 training digits)")
    assert validation["y"] == pytest.approx([e.val_accuracy for e in p.evals])
    assert training["y"] == pytest.approx([e.train_accuracy for e in p.evals])
    _, held = data.validation_split(mnist.train)
    from digitrec.runs import eval_subset
    model = run.trained_model()
    order = data.pixel_permutation()
    assert p.evals[-1].val_accuracy == pytest.approx(train.evaluate(model, eval_subset(held), order=order)[1])
    # The test set appears once, at the end, and the page says so.
    assert p.final_test_accuracy == pytest.approx(train.evaluate(model, mnist.test, order=order)[1])
    assert any("measured once, now that training has ended" in s.value for s in at.success)
    assert any("used once, when the run ends" in c.value for c in at.caption)
    # A network trained on shuffled pixels is not offered to the explorers (it would misread their digits).
    assert not [b for b in at.button if b.key == "train_export_use"]


def test_a_lab_setting_out_of_range_is_refused_before_anything_starts(mnist):
    at = _open()
    at.text_input(key="train_lr").set_value("20").run()
    at.button(key="train_start").click().run()
    assert not at.exception
    assert at.warning and "Cannot train:" in at.warning[0].value and "learning rate" in at.warning[0].value
    assert "train" not in at.session_state["training_runs"] if "training_runs" in at.session_state else True


def test_the_page_has_a_worker_waiting_before_start_is_pressed(monkeypatch):
    from digitrec import config
    from digitrec.engines.local import spare_worker

    monkeypatch.setenv(config.MAX_RUNS_ENV, "64")  # a free core for the spare, whatever earlier tests left training
    spare = spare_worker()
    spare.close()
    at = _open()
    assert not at.exception
    waiting = spare.pid
    assert waiting is not None  # started when the page was shown: the first Start takes it, imports done
    at.run()
    assert spare.pid == waiting  # one spare, not one per rerun
    monkeypatch.setenv("DIGITREC_SPARE_WORKER", "0")  # a server that turned spares off starts none
    spare.close()
    at.run()
    assert spare.pid is None
