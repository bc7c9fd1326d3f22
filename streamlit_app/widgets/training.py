"""Training widgets: a live run with its controls, curves, probe digit and first-layer weights; the race.

A run trains in a worker process of its own (``digitrec.engines``), waiting
its turn in the server's fair queue; its handle belongs to this browser session
(``state.training_run(slot)``) and ends with it. The views read it inside a
fragment that reruns every second while the run is active, so the page never
waits for training and stays responsive; when the run starts or ends, the
fragment reruns the whole page once so buttons and downloads match.
"""

from __future__ import annotations

import dataclasses

from typing import Callable

import pandas as pd
import streamlit as st
import torch

from digitrec import checkpoints, config, engines, models, race, runs
from digitrec.data import permute_pixels, pixel_permutation, split_sizes
from digitrec.errors import DigitrecError, InvalidConfig
from digitrec.race import Race, RaceMode
from digitrec.engines.local import WorkerRun
from digitrec.runs import RunProgress, RunStatus
from digitrec.spec import make_spec, parse_widths
from digitrec.viz.digits import digit_figure, probabilities_figure
from digitrec.viz.training import curves_figure, first_layer_figure, race_figure
from streamlit_app import state

REFRESH_S = 1.0  # how often an active run's views are redrawn
TRAIN_SLOT = "train"  # the Train page's run
RACE_SLOT = "race"  # the race page's race
# The FC layer picker: each FC preset's label -> its widths as typed, then "custom widths" (a text box).
FC_PRESETS = {p.label: p.widths_text for p in config.PRESETS.values() if p.architecture == "fcnet"}
FC_PRESETS["custom widths"] = None
SPEEDS = (1, 5, 20, 100, 0)  # slow motion, steps per second (0: full speed)
LESSON_SECONDS = 15.0  # the lesson's live run is slowed to last about this long, so a learner can watch it
ARCH_LABELS = {"fcnet": "FCNet (fully connected)", "tinyvgg": "TinyVGG (convolutional)"}
OPTIMIZER_LABELS = {"sgd": "plain SGD", "momentum": "SGD with momentum", "adam": "Adam"}
ACTIVATION_LABELS = {"relu": "ReLU", "none": "none (straight lines only)"}


def _train_size_label(n: int) -> str:
    """60,000 means every digit not held out for validation."""
    if n >= config.TRAIN_DIGITS:
        return f"all {split_sizes(config.TRAIN_DIGITS)[0]:,}"
    return f"{n:,}"


def _duration(seconds: float) -> str:
    if seconds != seconds:  # nan: not known yet
        return "–"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


# --- settings ------------------------------------------------------------------------------------


def training_settings(*, key: str, disabled: bool = False) -> dict:
    """The settings form of a run; returns raw values for ``digitrec.spec.make_spec``.

    Values typed as text (widths, learning rate) are checked by make_spec, which
    refuses anything invalid with one sentence before training starts.
    """
    session = dict(persist_state="session", disabled=disabled)  # kept when the learner visits other pages
    net_col, opt_col, data_col = st.columns(3)
    with net_col:
        arch = st.radio("Network", list(ARCH_LABELS), format_func=ARCH_LABELS.get, key=f"{key}_arch", **session)
        widths, channels, activation = config.FC_HIDDEN, config.CNN_CHANNELS, config.FC_ACTIVATION
        if arch == "fcnet":
            preset = st.selectbox("Layers", list(FC_PRESETS), key=f"{key}_preset", **session,
                                  help="784 inputs (one per pixel), the hidden layers, 10 outputs (one per digit).")
            widths = FC_PRESETS[preset]
            if widths is None:
                widths = st.text_input("Hidden layer widths, comma-separated", config.CUSTOM_WIDTHS, key=f"{key}_widths",
                                       **session, help="One whole number per hidden layer, e.g. 64, 32.")
            activation = st.radio(
                "Activation after each hidden layer", config.ACTIVATIONS, format_func=ACTIVATION_LABELS.get,
                key=f"{key}_activation", horizontal=True, **session,
                help="Without ReLU, the layers multiply into one linear map: however many there are, the network "
                     "can only draw straight boundaries between digits (the linear ceiling, about 92 %).",
            )
        else:
            channels = st.number_input("Channels (feature maps per conv layer)", *config.APP_CHANNELS_RANGE,
                                       config.CNN_CHANNELS, key=f"{key}_channels", **session,
                                       help=f"CNN Explainer's TinyVGG uses {config.CNN_CHANNELS}.")
    with opt_col:
        optimizer = st.selectbox("Optimizer", config.OPTIMIZERS, format_func=OPTIMIZER_LABELS.get,
                                 index=config.OPTIMIZERS.index(config.OPTIMIZER), key=f"{key}_optimizer", **session)
        st.caption(config.OPTIMIZER_EXPLANATIONS[optimizer])
        lr = st.text_input("Learning rate", f"{config.LR:g}", key=f"{key}_lr", **session,
                           help=f"How big each update is. Adam: about {config.LR:g}; plain SGD: about 0.1-0.3; "
                                "with momentum about 0.05. Too high and the loss explodes.")
        schedule = st.selectbox("Schedule", config.SCHEDULES, key=f"{key}_schedule", **session,
                                help="cosine lowers the rate smoothly to 0 by the last step; onecycle first warms up to it (30 % of the steps), then lowers it to about 0.")
    with data_col:
        batch_size = st.number_input("Batch size (digits per step)", *config.BATCH_RANGE, config.BATCH_SIZE,
                                     key=f"{key}_batch", **session)
        epochs = st.number_input("Epochs (passes over the digits)", 1, config.MAX_APP_EPOCHS, config.EPOCHS,
                                 key=f"{key}_epochs", **session)
        train_size = st.select_slider(
            "Training digits", config.TRAIN_SIZE_CHOICES, value=config.TRAIN_DIGITS, key=f"{key}_train_size",
            format_func=_train_size_label,
            help=f"Train on the first N training digits. {config.VALIDATION_SIZE:,} of MNIST's "
                 f"{config.TRAIN_DIGITS:,} are always held out for validation and never trained on; few digits "
                 "overfit: training accuracy climbs far above validation accuracy.", **session,
        )
    st.markdown("**The lab**: change what the network sees")
    aug_col, rot_col, shuffle_col = st.columns(3)
    augment_shift = aug_col.select_slider(
        "Augmentation: shift up to", config.AUGMENT_SHIFT_CHOICES, value=0, key=f"{key}_augment_shift",
        format_func=lambda v: "off" if v == 0 else f"{v} px", **session,
        help="Each training batch is moved by a random whole number of pixels, a new draw every batch, so the "
             "network never sees a digit in only one place. Validation and test digits are never moved.",
    )
    augment_rotation = rot_col.select_slider(
        "Augmentation: turn up to", config.AUGMENT_ROTATION_CHOICES, value=0, key=f"{key}_augment_rotation",
        format_func=lambda v: "off" if v == 0 else f"{v}°", **session,
        help="Each training digit is also turned by a random small angle, like a slanted hand.",
    )
    shuffle_pixels = shuffle_col.toggle(
        "Shuffle the pixels", value=False, key=f"{key}_shuffle", **session,
        help="Every digit's 784 pixels are read in one fixed scrambled order, the same for training, validation "
             "and testing. Nothing is lost, only the neighbours are: a fully connected network does not care; "
             "a convolution, which looks at neighbouring pixels, does.",
    )
    with st.expander("More settings"):
        c1, c2, c3 = st.columns(3)
        seed = c1.number_input("Seed", *config.SEED_RANGE, config.SEED, key=f"{key}_seed", **session,
                               help="Fixes the starting weights and the order of the batches: the same seed, the same run.")
        snapshot_every = c2.number_input(
            f"Snapshot every N steps (0: about {config.SNAPSHOTS} per run)", *config.SNAPSHOT_EVERY_RANGE, 0,
            key=f"{key}_snapshot", **session,
            help="A snapshot keeps the first layer's weights and the probe digit's prediction for the replay slider.",
        )
        steps_per_s = c3.select_slider(
            "Slow motion", SPEEDS, value=0, key=f"{key}_speed", **session,
            format_func=lambda v: "full speed" if v == 0 else f"{v} steps per second",
            help="Slow training down to watch the weights change; the speeds shown stay the real ones.",
        )
    return dict(architecture=arch, widths=widths, channels=channels, optimizer=optimizer, lr=lr, schedule=schedule,
                batch_size=batch_size, epochs=epochs, seed=seed, train_size=train_size, snapshot_every=snapshot_every,
                steps_per_s=steps_per_s, activation=activation, augment_shift=augment_shift,
                augment_rotation=augment_rotation, shuffle_pixels=shuffle_pixels)


def make_run(values: dict, data, probe) -> WorkerRun:
    """A run (not started) from ``training_settings`` values; InvalidConfig if they are invalid."""
    values = dict(values)
    steps_per_s = values.pop("steps_per_s", 0)
    pace = [runs.Pace(1.0 / steps_per_s)] if steps_per_s else []
    return engines.make_run(make_spec(**values), data, probe=probe, callbacks=pace, owner=state.session_id())


# --- controls ------------------------------------------------------------------------------------


def _start(slot: str, make_run: Callable[[], WorkerRun], *, paused: bool = False, steps: int = 0,
           epoch: bool = False) -> str | None:
    """Make, keep and start a run; the refusal sentence if the settings are invalid."""
    try:
        run = make_run()
    except DigitrecError as e:
        return str(e)
    state.set_training_run(slot, run)
    run.start(paused=paused or bool(steps) or epoch)
    if epoch:
        run.step_epoch()
    elif steps:
        run.step(steps)
    return None


def run_controls(*, key: str, slot: str, make_run: Callable[[], WorkerRun], stepping: bool = True) -> None:
    """Start, Pause, Resume, Step (one batch), +1 epoch and Stop for the run in ``slot``.

    ``make_run`` builds a new run from the current settings; it raises
    InvalidConfig (shown as a sentence) if they are invalid.
    """
    engines.prepare()  # a worker waiting before Start is pressed
    run = state.training_run(slot)
    status = run.status if run is not None else RunStatus.IDLE
    active = status.active
    buttons = [  # (name, label, icon, enabled, help)
        ("start", "Start", ":material/play_arrow:", not active,
         "Train a new network with these settings (replaces the last run)."),
        ("pause", "Pause", ":material/pause:", status is RunStatus.RUNNING, None),
        ("resume", "Resume", ":material/play_arrow:", status is RunStatus.PAUSED, None),
    ]
    if stepping:
        can_step = status is RunStatus.PAUSED or not active
        buttons += [
            ("step", "Step (1 batch)", ":material/skip_next:", can_step,
             "Train one batch, then pause (starts a new, paused run if none is going)."),
            ("epoch", "+1 epoch", ":material/fast_forward:", can_step, "Train to the end of this epoch, then pause."),
        ]
    buttons.append(("stop", "Stop", ":material/stop:", status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSED),
                    "End the run; the network keeps what it has learned."))
    clicked = {}
    for col, (name, label, icon, enabled, help_text) in zip(st.columns(len(buttons)), buttons):
        clicked[name] = col.button(label, key=f"{key}_{name}", icon=icon, disabled=not enabled, help=help_text,
                                   type="primary" if name == "start" else "secondary", width="stretch")
    problem = None
    if clicked["start"]:
        problem = _start(slot, make_run)
    elif clicked["pause"]:
        run.pause()
    elif clicked["resume"]:
        run.resume()
    elif clicked.get("step"):
        if active:
            run.step(1)
        else:
            problem = _start(slot, make_run, steps=1)
    elif clicked.get("epoch"):
        if active:
            run.step_epoch()
        else:
            problem = _start(slot, make_run, epoch=True)
    elif clicked["stop"]:
        run.stop()
    if problem:
        st.warning(problem)
    elif any(clicked.values()):
        st.rerun()  # redraw the buttons for the new state


# --- the live view -------------------------------------------------------------------------------


def _progress_bar(p: RunProgress) -> None:
    where = f" on the {runs.device_words(p.device)}" if p.step else ""  # the worker says once it has trained
    text = (f"Epoch {max(p.epoch, 1)}/{p.epochs} · step {p.step:,}/{p.total_steps:,} · "
            f"{p.samples_per_s:,.0f} digits/s{where} · ETA {_duration(p.eta_s) if p.status.active else '–'}")
    st.progress(p.progress, text=text)


def _queue_note(run, p: RunProgress) -> None:
    """Where a waiting run stands in the server's queue, or that its worker is starting."""
    if p.status is RunStatus.QUEUED:
        place = run.place_in_line() if hasattr(run, "place_in_line") else None
        wait = run.wait_estimate_s() if hasattr(run, "wait_estimate_s") else float("nan")
        estimate = f"about {_duration(wait)}" if wait == wait else "not known yet (the runs ahead have just started)"
        st.info(f"Waiting for a free place on the server: **{place or 1} in line**. It should start in {estimate}. "
                "Every learner's runs take turns, so nobody waits forever.")
    elif p.status.active and p.step == 0 and not p.evals:
        st.caption("Starting a worker process for this run (a few seconds)…")


def _status_note(p: RunProgress) -> None:
    if p.notice:  # it trains elsewhere than the server meant (the Ray cluster could not be reached)
        st.warning(p.notice)
    seconds = f"{p.elapsed_s:,.1f} s of training"
    final = (f"{p.final_test_accuracy:.2%} on all {p.test_size:,} test digits, measured once, now that training "
             "has ended" if p.final_test_accuracy is not None else "")
    if p.status is RunStatus.PAUSED:
        st.info(f"Paused after step {p.step:,}. **Step** trains one batch, **+1 epoch** trains to the end of the "
                "epoch, **Resume** goes on.")
    elif p.status is RunStatus.STOPPING:
        st.info("Stopping: finishing the last batch, then measuring the test accuracy once…")
    elif p.status is RunStatus.STOPPED:
        st.info(f"Stopped after step {p.step:,} of {p.total_steps:,} ({seconds}). Test accuracy {final or '–'}.")
    elif p.status is RunStatus.FINISHED:
        st.success(f"Finished: {p.step:,} steps in {seconds}. Test accuracy {final}.")
    elif p.status is RunStatus.DIVERGED:
        st.warning(p.message + (f" Its test accuracy now: {final}." if final else ""))
    elif p.status is RunStatus.FAILED:
        st.error(p.message)
    if p.status.ended and p.step >= 50 and p.val_accuracy is not None and p.val_accuracy < 0.2:
        st.warning(
            f"After {p.step:,} steps the network does no better than guessing (10 %). A learning rate far too high "
            "kills the neurons (their ReLU gives 0 for every digit, so nothing can change them); one far too low "
            f"barely moves the weights. Try {config.LR:g} with Adam or 0.1 with plain SGD."
        )


def _probe_view(run, probs, *, key: str, caption: str) -> None:
    """The run's own probe digit (fixed when it started) beside its probabilities."""
    pixels = run.probe[0, 0]  # (28, 28)
    digit = state.current_digit()
    st.markdown("**The probe digit**: what the network thinks it is")
    left, right = st.columns([1, 2])
    with left:
        st.plotly_chart(digit_figure(pixels, height=140), key=f"{key}_probe_digit", config={"staticPlot": True})
        if torch.equal(pixels, digit.pixels):
            label = f" ({digit.label})" if digit.label is not None else ""
            st.caption(f"Probe: {digit.source}{label}")
        else:
            st.caption("Probe: the digit that was current when this run started")
    with right:
        if probs is not None:
            st.plotly_chart(probabilities_figure({caption: probs}, height=210), key=f"{key}_probe_probs")


def _weights_view(p: RunProgress, weights, *, key: str, step: int) -> None:
    """The first layer's ``weights`` as pictures, at training step ``step`` of run ``p``."""
    if weights is None:
        return
    unshuffled = p.shuffled_pixels and p.architecture == "fcnet"
    if unshuffled:  # draw each weight at the pixel it reads: w_original[j] = w[position of pixel j]
        weights = permute_pixels(weights, torch.argsort(pixel_permutation()))
    st.plotly_chart(first_layer_figure(weights, architecture=p.architecture, total_units=p.total_units),
                    key=f"{key}_weights")
    if unshuffled:
        st.caption("This network reads shuffled pixels; each weight is drawn back at the pixel it reads. Strokes "
                   "appear although the network was never told which pixels are neighbours.")
    elif p.architecture == "fcnet":
        st.caption("Each image is one hidden neuron's 784 weights, laid out like the digit's pixels: ink on an orange "
                   "pixel raises the neuron, ink on a purple one lowers it. They start as noise and grow strokes.")
    else:
        alike = ""
        if p.snapshots and p.snapshots[0].first_layer is not None and step > 0:  # step 0 is the start itself
            likeness = runs.likeness_to_start(p.snapshots[0].first_layer, weights)
            low, high = float(likeness.min()), float(likeness.max())
            alike = (f" Compared with their start, each is now {low:.2f} to {high:.2f} alike (cosine similarity "
                     "of its 9 weights: 1 is the same pattern, 0 an unrelated one)"
                     + (": training has tuned every filter more than redrawn it." if low >= runs.TUNED_NOT_REDRAWN else "."))
        st.caption("Each square is one 3×3 filter of the first convolution, slid over the whole digit." + alike)


def _curves(p: RunProgress, *, key: str, x: str, upto_step: int | None = None) -> None:
    x_max = None
    if upto_step is not None and p.steps:
        x_max = getattr(p.steps[-1], x)
    fig = curves_figure(p.steps, p.evals, p.epoch_results, x=x, upto_step=upto_step, x_max=x_max,
                        eval_size=p.eval_size, validation_size=p.validation_size,
                        train_eval_size=p.train_eval_size, height=440)
    st.plotly_chart(fig, key=f"{key}_curves")


def _watch(*, key: str, slot: str, body: Callable[[object], None]) -> None:
    """Draw ``body(run)``; while the run is active, redraw it every REFRESH_S seconds (only this part)."""
    run = state.training_run(slot)
    active = run is not None and run.status.active

    @st.fragment(run_every=REFRESH_S if active else None, key=f"{key}_live")
    def live() -> None:
        current = state.training_run(slot)
        body(current)
        now_active = current is not None and current.status.active
        if now_active != active:
            st.rerun()  # the run started or ended: redraw the page once (buttons, replay, downloads)

    live()


def run_view(*, key: str, slot: str, replay: bool = True, export: bool = True) -> None:
    """The run in ``slot``: progress, curves, the probe digit, the first layer; then replay and export."""

    def body(run: WorkerRun | None) -> None:
        if run is None:
            st.info("Choose the settings above and press **Start**. The curves, the probe digit's prediction and "
                    "the first layer's weights appear here and update every second.")
            return
        p = run.progress()
        _progress_bar(p)
        _queue_note(run, p)
        _status_note(p)
        curves_col, net_col = st.columns([3, 2])
        with curves_col:
            x = st.segmented_control("Horizontal axis", ["step", "seconds"], default="step", key=f"{key}_x",
                                     format_func={"step": "steps", "seconds": "seconds"}.get) or "step"
            _curves(p, key=key, x=x)
            st.caption(
                f"Grey: each batch's loss and accuracy; blue: their running mean. Every {p.plan.eval_every} steps, "
                f"dotted dark blue: {p.train_eval_size:,} of the digits it trains on; orange: {p.eval_size:,} "
                f"validation digits, held out of the training set and never trained on; red diamonds: all "
                f"{p.validation_size:,} validation digits after each epoch. The gap between dark blue and orange is "
                f"overfitting. The {p.test_size:,} test digits are not watched at all: they are used once, when the "
                "run ends, so nothing is tuned by looking at them. Seconds count training only."
                + (f" Measuring waits longer between points when needed, so that the points and snapshots "
                   f"keep within {config.RECORDING_BUDGET:.0%} of the time, the diamonds' passes counted in; "
                   "every curve still gets a first point, one halfway and a last, and every epoch its diamond, "
                   "whatever they cost." if p.plan.adapt_eval else ""))
        with net_col:
            _probe_view(run, p.probe_probs, key=key, caption="now")
            _weights_view(p, p.first_layer, key=key, step=p.step)

    _watch(key=key, slot=slot, body=body)
    run = state.training_run(slot)
    if run is None:
        return
    status = run.status
    if replay and (status is RunStatus.PAUSED or status.ended):
        snapshot_replay(key=f"{key}_replay", slot=slot)
    if export and status.ended:
        model_export(key=f"{key}_export", slot=slot)


@st.fragment
def snapshot_replay(*, key: str, slot: str) -> None:
    """A slider over the run's snapshots: the curves, probe prediction and first layer at that moment."""
    run = state.training_run(slot)
    if run is None:
        return
    p = run.progress()
    snaps = p.snapshots
    if len(snaps) < 2:
        return
    st.subheader("Replay the run")
    every = p.plan.snapshot_every
    if p.plan.adapt_snapshots:  # a snapshot waits while taking it would overrun the recording budget
        taken = f"{len(snaps)} snapshots, at most one every {every:,} steps (some later, where taking one then would " \
                f"have overrun the recording budget)."
    else:
        taken = f"A snapshot every {every:,} steps, as chosen."
    st.caption(f"{taken} Slide to see what the network knew at that moment.")
    index = st.select_slider(
        "Network at", options=list(range(len(snaps))), value=len(snaps) - 1, key=f"{key}_at",
        format_func=lambda i: f"step {snaps[i].step:,} ({snaps[i].seconds:.1f} s)",
    )
    snap = snaps[index]
    accuracy = f"{snap.val_accuracy:.1%}" if snap.val_accuracy is not None else "–"
    st.markdown(f"**Step {snap.step:,}**, epoch {max(snap.epoch, 1)}, after {snap.seconds:.1f} s of training: "
                f"validation accuracy {accuracy} on {p.eval_size:,} held-out digits.")
    curves_col, net_col = st.columns([3, 2])
    with curves_col:
        _curves(p, key=key, x="step", upto_step=snap.step)
    with net_col:
        _probe_view(run, snap.probe_probs, key=key, caption=f"step {snap.step:,}")
        _weights_view(p, snap.first_layer, key=key, step=snap.step)


def _model_label(p: RunProgress) -> str:
    accuracy = f", {p.final_test_accuracy:.1%}" if p.final_test_accuracy is not None else ""
    return f"My {p.name} ({p.step:,} steps{accuracy})"


def model_export(*, key: str, slot: str) -> None:
    """Use the ended run's model in every explorer, or download it as a safetensors checkpoint."""
    run = state.training_run(slot)
    if run is None or not run.status.ended:
        return
    p = run.progress()
    if p.step == 0 or p.status is RunStatus.FAILED:  # a failed worker sent no weights back
        return
    st.subheader("Use your network")
    added = st.session_state.setdefault(f"{key}_added", {})  # run.id -> the Network key it was added as
    use_col, download_col = st.columns(2)
    with use_col:
        if p.shuffled_pixels or getattr(run.spec.model, "activation", "relu") != "relu":
            # The explorers feed plain digits to a ReLU network: this one would read them wrongly or not fit.
            st.info("A network trained on shuffled pixels or without ReLU reads digits differently from the "
                    "explorers' networks, so it stays here; download it to keep it.")
        elif run.id in added and added[run.id] in state.networks():
            net = state.networks()[added[run.id]]
            st.success(f"**{net.label}** is in the network picker of every explorer page; the explorers show it now.")
        elif st.button("Use it in the explorers", key=f"{key}_use", type="primary",
                       help="Adds it beside the pretrained networks in every page's network picker."):
            try:
                net = state.add_my_model(state.new_my_model_key(), _model_label(p), run.trained_model(),
                                         p.final_test_accuracy, snapshots=p.snapshots)
            except DigitrecError as e:  # this session holds its most networks
                st.warning(str(e))
            else:
                added[run.id] = net.key
                state.set_network(net.key)  # the explorers, and the links below, open on it next
                st.rerun()
    with download_col:
        name = models.display_name(run.spec.model).lower().replace(" ", "-").replace("(", "").replace(")", "")
        try:
            weights = run.checkpoint_bytes()
        except DigitrecError as e:  # e.g. a failed run whose weights are not finite
            st.warning(f"These weights cannot be saved: {e}")
            return
        st.download_button("Download the weights (.safetensors)", data=weights,
                           file_name=f"digitrec-{name}-step{p.step}.safetensors", mime="application/octet-stream",
                           key=f"{key}_download", on_click="ignore",
                           help="A safetensors file with the configuration; upload it here later to use it again.")
    if added.get(run.id) in state.networks():
        # Links, not buttons that switch pages: a button's click sent while this page was still redrawing
        # was sometimes dropped (Streamlit's fast reruns reset its trigger; seen in CI); a link always
        # navigates. Both pages open on this network, whatever was chosen since: the link's ?net= wins
        # (state.sync_url). The network lives in this session, so a new tab falls back to the first one.
        from streamlit_app.widgets.units import UNIT_PAGE

        mine = {"net": added[run.id]}
        st.page_link("views/fc_explorer.py" if p.architecture == "fcnet" else "views/cnn_explorer.py",
                     label="Open it in the explorer", icon=":material/open_in_new:", query_params=mine)
        st.page_link(UNIT_PAGE, label="Watch one unit form across the run", icon=":material/person_search:",
                     query_params=mine, help="Inside a unit, with a slider over this run's snapshots: a neuron's or "
                                             "map's weights, top digits and pull at each moment of training.")


def checkpoint_upload(*, key: str) -> None:
    """Upload a checkpoint saved earlier; it is checked before use and added to the explorers."""
    upload = st.file_uploader(
        "A digitrec checkpoint (.safetensors)", key=f"{key}_file",
        help="Only safetensors checkpoints saved by digitrec are read; nothing in the file is ever run.",
    )
    if upload is None:
        return
    data = upload.getvalue()
    net = state.uploaded_model(data)  # the same file again (even re-uploaded): the same network
    if net is None:
        try:
            ck = checkpoints.load_bytes(data, name=state.plain(upload.name))
            accuracy = f", {ck.info.test_accuracy:.1%}" if ck.info.test_accuracy is not None else ""
            net = state.add_my_model(state.new_my_model_key(), f"My {ck.info.name} (uploaded{accuracy})", ck.model,
                                     ck.info.test_accuracy)
        except DigitrecError as e:  # CheckpointError, or this session holds its most networks
            st.warning(str(e))
            return
        state.remember_upload(data, net)
    st.success(f"Loaded **{net.label}**: pick it in the network picker of any explorer page.")


# --- the lesson widget ---------------------------------------------------------------------------


def live_training(*, key: str, model: str = "fc", steps: int = 300, batch_size: int = 64, lr: float = 0.1,
                  seed: int = 0, optimizer: str = "sgd") -> None:
    """Train a network live for a few hundred steps: its curves, probe digit and first-layer weights change.

    model: "fc" (784-16-16-10), "fc-wide" or "cnn"; steps: batches to train. optimizer: "sgd" is plain
    gradient descent (momentum 0: new weight = old weight - lr x slope, what lesson 6 teaches) or "adam".
    """
    if model not in config.PRESETS:
        st.warning(f"live_training: model must be one of {', '.join(config.PRESETS)} (got {model!r}).")
        return
    dataset = state.require_mnist()
    slot = f"widget:{key}"
    preset = config.PRESETS[model]
    network = dict(architecture=preset.architecture, widths=preset.hidden or config.FC_HIDDEN,
                   channels=preset.channels or config.CNN_CHANNELS)

    def make_run() -> WorkerRun:
        spec = make_spec(**network, lr=lr, batch_size=batch_size, epochs=1, seed=seed, max_steps=int(steps),
                         optimizer=optimizer)
        if optimizer == "sgd":  # plain SGD: no momentum, so each step is exactly lr x slope
            spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, momentum=0.0))
        pace = runs.Pace(LESSON_SECONDS / max(int(steps), 1))
        return engines.make_run(spec, dataset, probe=state.current_digit().pixels, callbacks=[pace],
                                owner=state.session_id())

    method = "plain gradient descent (SGD, no momentum)" if optimizer == "sgd" else "Adam"
    st.caption(f"{int(steps):,} steps of {int(batch_size)} digits, {method} at learning rate {lr:g}, slowed down to "
               f"take about {LESSON_SECONDS:.0f} seconds so you can watch (the speed shown is the real one).")
    run_controls(key=key, slot=slot, make_run=make_run, stepping=False)
    run_view(key=key, slot=slot, replay=False, export=False)


# --- the race ------------------------------------------------------------------------------------


PRESET_RACE = "fcnet-tinyvgg"  # the course's race: FCNet against TinyVGG


def race_contenders() -> dict[str, str]:
    """The races a learner can pick, option -> label: the course's FCNet against TinyVGG, then each
    of their own models (imported, or sent from a notebook) against either preset ("tinyvgg:KEY")."""
    options = {PRESET_RACE: "FCNet against TinyVGG"}
    for net_key, net in state.networks().items():
        if isinstance(net.config, models.ModelSpec):
            for arch in ("fcnet", "tinyvgg"):
                options[f"{arch}:{net_key}"] = f"{net.label} against {ARCH_LABELS[arch]}"
    return options


def _race_configs(values: dict) -> list[models.ModelConfig]:
    """The two contenders' model configurations (own model first); InvalidConfig if it has gone."""
    fc = models.FCConfig(hidden=parse_widths(values["widths"]))
    cnn = models.TinyVGGConfig(channels=int(values["channels"]))
    if values.get("contenders", PRESET_RACE) == PRESET_RACE:
        return [fc, cnn]
    arch, _, net_key = values["contenders"].partition(":")
    net = state.networks().get(net_key)
    if net is None or not isinstance(net.config, models.ModelSpec):
        raise InvalidConfig("That model of yours is no longer in this session; import it again on the Train page.")
    own = dataclasses.replace(net.config, name=f"mine: {net.config.name or 'model'}")
    return [own, fc if arch == "fcnet" else cnn]


def race_settings(*, key: str, disabled: bool = False) -> dict:
    """The race's shared settings: both networks get the same digits, seed, batch size and optimizer."""
    session = dict(persist_state="session", disabled=disabled)
    options = race_contenders()
    contenders = st.selectbox(
        "Contenders", list(options), format_func=options.get, key=f"{key}_contenders", **session,
        help="Import your own model on the Train page to race it. It trains from scratch with its own layers "
             "(fresh weights from the same seed), on the same digits as the other network: starting from its "
             "trained weights would put it near its best accuracy at second zero, and the race asks which "
             "network learns faster.")
    # Only the pickers of the networks that race: a learner's own model against TinyVGG has no FCNet to size.
    racing = {"fcnet", "tinyvgg"} if contenders == PRESET_RACE else {contenders.partition(":")[0]}
    fc_presets = [k for k, v in FC_PRESETS.items() if v]
    preset, channels = fc_presets[0], config.CNN_CHANNELS  # what a network that does not race is built with
    c1, c2, c3 = st.columns(3)
    with c1:
        if "fcnet" in racing:
            preset = st.selectbox("FCNet", fc_presets, key=f"{key}_fc", **session)
        if "tinyvgg" in racing:
            channels = st.number_input("TinyVGG channels", *config.APP_CHANNELS_RANGE, config.CNN_CHANNELS,
                                       key=f"{key}_channels", **session)
        mode = st.radio("Run them", [m.value for m in RaceMode], key=f"{key}_mode", horizontal=True, **session,
                        help="One after the other is fair: each network has the whole processor. Together, they "
                             "share it and both are slower.")
    with c2:
        train_size = st.select_slider("Training digits", config.TRAIN_SIZE_CHOICES, value=config.TRAIN_DIGITS,
                                      key=f"{key}_train_size",
                                      format_func=_train_size_label, **session)
        epochs = st.number_input("Epochs", 1, config.MAX_APP_EPOCHS, config.RACE_EPOCHS, key=f"{key}_epochs", **session)
        batch_size = st.number_input("Batch size", *config.BATCH_RANGE, config.BATCH_SIZE, key=f"{key}_batch",
                                     **session)
    with c3:
        # Adam, like the Train page: the rate below is Adam's; plain SGD at 0.001 leaves both networks at 10 %.
        optimizer = st.selectbox("Optimizer", config.OPTIMIZERS, format_func=OPTIMIZER_LABELS.get,
                                 index=config.OPTIMIZERS.index(config.OPTIMIZER), key=f"{key}_optimizer", **session)
        lr = st.text_input("Learning rate", f"{config.LR:g}", key=f"{key}_lr", **session)
        seed = st.number_input("Seed", *config.SEED_RANGE, config.SEED, key=f"{key}_seed", **session)
    return dict(widths=FC_PRESETS[preset], channels=channels, mode=mode, train_size=train_size, epochs=epochs,
                batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed, contenders=contenders)


def make_race(values: dict) -> Race:
    """A Race (not started) from ``race_settings`` values; InvalidConfig if they are invalid."""
    shared = {k: values[k] for k in ("train_size", "epochs", "batch_size", "optimizer", "lr", "seed")}
    problems = []
    specs = []
    for arch in ("fcnet", "tinyvgg"):
        try:
            specs.append(make_spec(architecture=arch, widths=values["widths"], channels=values["channels"], **shared))
        except InvalidConfig as e:
            problems.append(str(e))
    if problems:
        raise InvalidConfig(problems[0])
    if values.get("contenders", PRESET_RACE) != PRESET_RACE:  # a learner's own model against one preset
        own, preset = _race_configs(values)
        specs = race.own_model_specs(own, specs[0] if isinstance(preset, models.FCConfig) else specs[1])
    owner = state.session_id()
    return race.make_race(state.require_mnist(), specs, values["mode"],
                          make_run=lambda spec, data, probe: engines.make_run(spec, data, probe, owner=owner))


def race_controls(*, key: str, slot: str, make: Callable[[], Race]) -> None:
    race_now = state.training_run(slot)
    active = race_now is not None and race_now.status.active
    c1, c2, _ = st.columns([1, 1, 3])
    start = c1.button("Start the race", key=f"{key}_start", icon=":material/flag:", type="primary", disabled=active,
                      width="stretch")
    stop = c2.button("Stop", key=f"{key}_stop", icon=":material/stop:", width="stretch",
                     disabled=not active or race_now.status is RunStatus.STOPPING)
    if start:
        try:
            new = make()
        except DigitrecError as e:
            st.warning(str(e))
            return
        state.set_training_run(slot, new)
        new.start()
        st.rerun()
    if stop:
        race_now.stop()
        st.rerun()


def _static_rows(configs: list[models.ModelConfig]) -> list[race.RaceRow]:
    """Parameters and multiply-adds of the networks about to race, before any race has run."""
    rows = []
    for model_config in configs:
        model = models.build(model_config)
        rows.append(race.race_row(name=models.display_name(model_config), params=models.count_params(model),
                                  macs_forward=models.count_macs(model), train_size=config.TRAIN_DIGITS,
                                  samples_seen=0, elapsed_s=0.0, evals=[]))
    return rows


def _table_frame(rows: list[race.RaceRow]) -> pd.DataFrame:
    """The race table with one column per network and one row per measure."""
    return pd.DataFrame(race.table(rows)).set_index("network").T


MACS_NOTE = (
    "Multiply-adds per digit are counted from each layer's shapes: a Linear layer does inputs × outputs, a "
    "convolution does, for every output value, input channels × 3 × 3. A training step is estimated at 3× the "
    "forward pass: the backward pass computes, for each layer, the gradient of its input and of its weights, each "
    "about as much arithmetic as the forward. Speeds and seconds are measured in this run on the training clock "
    "(evaluation and pauses excluded); seconds to an accuracy are those of the first validation evaluation at or above it (the test set is measured once, at the end)."
)


def race_view(*, key: str, slot: str, explanation: bool = True, values: dict | None = None) -> None:
    """Both networks' validation accuracy against seconds, the table beside it, and the explanation under it.
    ``values`` (race_settings'): the contenders the table shows before a race."""
    try:
        upcoming = _race_configs(values) if values else [models.FCConfig(), models.TinyVGGConfig()]
    except (InvalidConfig, ValueError):  # widths being typed, or a model just removed: the course's pair
        upcoming = [models.FCConfig(), models.TinyVGGConfig()]

    def body(race_now: Race | None) -> None:
        if race_now is None:
            rows = _static_rows(upcoming)
            st.info("Press **Start the race** to train both networks on the same digits and time them.")
            st.table(_table_frame(rows))
            st.caption(MACS_NOTE)
            return
        progress = race_now.progress()
        status = race_now.status
        for run, p in zip(race_now.runs, progress):
            waiting = p.status in (RunStatus.IDLE, RunStatus.QUEUED)
            place = run.place_in_line() if p.status is RunStatus.QUEUED and hasattr(run, "place_in_line") else None
            text = (f"{p.name}: waiting for its turn" + (f" ({place} in line on the server)" if place else "")
                    if waiting else
                    f"{p.name}: {p.status.value} · step {p.step:,}/{p.total_steps:,} · {p.samples_per_s:,.0f} digits/s")
            st.progress(p.progress, text=text)
        for p in progress:
            if p.status in (RunStatus.DIVERGED, RunStatus.FAILED):
                st.warning(f"{p.name}: {p.message}")
            if p.notice:  # the Ray cluster could not be reached: it trains on this server
                st.warning(f"{p.name}: {p.notice}")
        if status.ended:
            st.success("The race is over." if status is RunStatus.FINISHED else "The race was stopped.")
        chart_col, table_col = st.columns([3, 2])
        rows = [race.row_of(p) for p in progress]
        with chart_col:
            zoom = st.toggle("Zoom into 80–100 %", value=False, key=f"{key}_zoom",
                             help="Where the networks differ most: the last few percent.")
            st.plotly_chart(race_figure([(p.name, p.evals) for p in progress], zoom=zoom,
                                        eval_size=progress[0].eval_size), key=f"{key}_race")
        with table_col:
            st.table(_table_frame(rows))
        st.caption(MACS_NOTE)
        if explanation and len(rows) == 2 and all(r.samples_per_s for r in rows):
            st.markdown(race.explanation(rows, [run.spec.model for run in race_now.runs]))

    _watch(key=key, slot=slot, body=body)


def race_chart(*, key: str, epochs: int = 2, train_size: int = config.TRAIN_DIGITS,
               batch_size: int = config.BATCH_SIZE, lr: float = config.LR, seed: int = config.SEED,
               mode: str = RaceMode.SEQUENTIAL.value) -> None:
    """FC vs CNN: train both on the same digits and chart validation accuracy against seconds, with the table."""
    values = dict(widths=config.FC_HIDDEN, channels=config.CNN_CHANNELS, mode=mode, train_size=train_size,
                  epochs=epochs, batch_size=batch_size, optimizer=config.OPTIMIZER, lr=lr, seed=seed)
    slot = f"widget:{key}"
    digits = _train_size_label(int(train_size))  # "all 55,000": the validation digits are never trained on
    if int(train_size) < config.TRAIN_DIGITS:
        digits = f"the first {digits}"
    st.caption(f"Both networks: {digits} training digits, {int(epochs)} epoch(s), batches of "
               f"{int(batch_size)}, seed {int(seed)}, {mode}.")
    race_controls(key=key, slot=slot, make=lambda: make_race(values))
    race_view(key=key, slot=slot)


# --- scale the task ------------------------------------------------------------------------------


def scale_panel(*, key: str) -> None:
    """Both networks on 28-128 px inputs with 1 or 3 channels: weights, arithmetic, memory, seconds, measured here."""
    from digitrec import scale

    st.markdown(
        "On MNIST the fully connected network is cheaper per digit. Does that hold on bigger, coloured images? "
        "Measure both networks here on synthetic images of each size (timing needs no dataset): their weights, "
        "multiply-adds per image, memory to train a batch, and seconds per 1,000 images. The fully connected "
        f"network here is {scale.network_name('fc')} (the race's wide one: every pixel of every channel feeds "
        f"each of its first {scale.FC_HIDDEN[0]} neurons), the convolutional one {scale.network_name('cnn')}."
    )
    channels = st.radio("Channels", scale.CHANNELS, key=f"{key}_channels", horizontal=True,
                        format_func=lambda c: "1 (grey)" if c == 1 else "3 (colour)")
    _scale_results(key=key, channels=channels)


def _scale_results(*, key: str, channels: int) -> None:
    """The measurement's button, then its progress (polled while a process of its own times the
    networks: the page stays usable), then the chart, table and explanation.

    Not a fragment itself: a fragment's rerun asked for while the whole page is running can be
    dropped, and a learner's click on the button must never be lost (a browser test lost it under load).
    """
    from digitrec import scale
    from digitrec.viz.scale import scale_figure

    rows = state.scale_measured(channels)
    if rows is None:
        measuring = state.scale_measuring(channels)
        if not measuring:
            failure = state.scale_failure(channels)
            if failure:
                st.warning(f"The last measurement stopped ({failure}). Press the button to measure again.")
            # on_click, not the button's return value: a click that lands as a run ends can lose its
            # trigger before this late widget reads it; a callback runs before the next script run.
            st.button("Measure both networks at 28, 32, 64 and 128 px", key=f"{key}_measure",
                      icon=":material/speed:", on_click=state.start_scale_measure, args=(channels,))
        if measuring:
            st.info("Timing a few training steps of each network at each size, in a process of its own; "
                    "the rest of the page works meanwhile. The results appear here.", icon=":material/speed:")
            _poll_scale(channels)
        return
    explanation = scale.explain(rows)
    st.plotly_chart(scale_figure(rows, overtakes_at=explanation.overtakes_at), key=f"{key}_figure")
    table = pd.DataFrame([{
        "network": scale.network_name(r.network), "input": f"{r.size}×{r.size}×{r.channels}",
        "parameters": f"{r.params:,}", "multiply-adds per image": f"{r.macs:,}",
        "training memory": f"{r.memory_bytes / 2**20:,.0f} MiB" + ("" if r.fits else " (over budget)"),
        "s per 1,000 images": "–" if r.seconds_per_1000 != r.seconds_per_1000 else f"{r.seconds_per_1000:.2f}",
    } for r in rows])
    st.dataframe(table, hide_index=True)
    st.markdown(explanation.text)


@st.fragment(run_every=1.0)
def _poll_scale(channels: int) -> None:
    """While measuring: look once a second, and redraw the results once they are in."""
    if state.scale_measured(channels) is not None or state.scale_failure(channels):
        st.rerun()  # the whole page: the results fragment around this poller draws them
