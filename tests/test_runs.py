"""runs: a background training run obeys start/pause/resume/step/stop from another thread,
records what the page draws (curves, test points, snapshots) consistently, keeps the
last good weights when it diverges, and two runs never share anything."""

from __future__ import annotations

import math
import time

import pytest
import torch

from digitrec import checkpoints, config, data, models, runs, train
from digitrec.runs import RunStatus, TrainingRun
from digitrec.spec import RunSpec
from digitrec.train import TrainConfig
from tests.helpers import digits as _digits, small_mnist as _data, wait_until as _wait_until


def _long_run(**spec_kwargs) -> TrainingRun:
    """FCNet, one digit per step, far more steps than a test waits for."""
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=500, batch_size=1), **spec_kwargs)
    return TrainingRun(spec, _data())


def _settle(run: TrainingRun) -> int:
    """The step a paused run rests at: read it twice, 0.3 s apart, and require it unchanged."""
    _wait_until(lambda: run.status is RunStatus.PAUSED)
    time.sleep(0.1)
    first = run.progress().step
    time.sleep(0.3)
    assert run.progress().step == first, "a paused run kept training"
    return first


# --- control from another thread ----------------------------------------------------------------


def test_start_pause_step_resume_and_stop_from_another_thread():
    run = _long_run()
    assert run.status is RunStatus.IDLE and run.progress().step == 0
    run.start(paused=True)
    assert run.thread_alive
    assert _settle(run) == 0

    run.step(3)
    _wait_until(lambda: run.progress().step >= 3)
    assert _settle(run) == 3

    run.resume()
    assert run.status is RunStatus.RUNNING
    _wait_until(lambda: run.progress().step >= 40)

    run.pause()
    assert run.status is RunStatus.PAUSED
    paused_at = _settle(run)
    assert paused_at >= 40
    run.resume()
    _wait_until(lambda: run.progress().step >= paused_at + 20)

    run.stop()
    assert run.join(timeout=30)
    assert not run.thread_alive  # the stopped run's thread has ended
    p = run.progress()
    assert p.status is RunStatus.STOPPED and 0 < p.step < p.total_steps
    # The last evaluation and snapshot are of the model as it ended.
    assert p.evals[-1].step == p.step and p.snapshots[-1].step == p.step
    assert p.final_test_accuracy == pytest.approx(train.evaluate(run.model, _data().test)[1])
    with pytest.raises(RuntimeError):
        run.start()  # one thread per run: a new run trains again


def test_a_run_paused_before_its_first_step_stops_cleanly():
    run = _long_run()
    run.start(paused=True)
    _settle(run)
    run.stop()
    assert run.join(timeout=30)
    p = run.progress()
    assert p.status is RunStatus.STOPPED and p.step == 0
    assert [e.step for e in p.evals] == [0] and [s.step for s in p.snapshots] == [0]


def test_step_from_an_idle_run_starts_it_paused_and_step_epoch_ends_at_the_epoch():
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=3, batch_size=8))
    run = TrainingRun(spec, _data(n_train=40))  # 5 steps per epoch
    run.step(2)
    _wait_until(lambda: run.progress().step == 2)
    assert _settle(run) == 2
    run.step_epoch()  # to the end of epoch 1
    _wait_until(lambda: run.progress().step == 5)
    assert _settle(run) == 5
    assert [e.epoch for e in run.progress().epoch_results] == [1]
    run.step_epoch()  # paused at an epoch's end: a whole epoch
    _wait_until(lambda: run.progress().step == 10)
    assert _settle(run) == 10
    run.resume()
    assert run.join(timeout=30)
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.step == 15
    assert [(e.epoch, e.step) for e in p.epoch_results] == [(1, 5), (2, 10), (3, 15)]


def test_two_runs_do_not_see_each_other():
    a, b = _long_run(), _long_run()
    a.start(paused=True)
    b.start(paused=True)
    a.step(5)
    _wait_until(lambda: a.progress().step == 5)
    assert _settle(a) == 5 and _settle(b) == 0
    assert a.control is not b.control and a.model is not b.model
    a.stop()
    assert a.join(timeout=30)
    assert a.status is RunStatus.STOPPED
    assert b.status is RunStatus.PAUSED and b.thread_alive  # untouched by a's stop
    assert b.progress().step == 0 and a.progress().step == 5
    assert [e.step for e in b.progress().evals] == [0] and a.progress().evals[-1].step == 5
    b.step(2)
    _wait_until(lambda: b.progress().step == 2)
    assert a.progress().step == 5
    b.stop()
    assert b.join(timeout=30)


# --- what a finished run recorded ------------------------------------------------------------------


def test_a_finished_run_records_curves_test_points_and_snapshots_consistently():
    d = _data(n_train=104, n_test=60)  # 8 of the 104 are held out for validation: 96 to train on
    config = models.FCConfig()
    spec = RunSpec(config, TrainConfig(epochs=2, batch_size=8, lr=1e-2), eval_every=5, snapshot_every=4)
    probe = d.test.images[3].float() / 255.0
    run = TrainingRun(spec, d, probe=probe)
    initial = models.build(config, seed=0)
    run.start()
    assert run.join(timeout=60)
    p = run.progress()

    assert p.status is RunStatus.FINISHED and p.message == ""
    assert (p.plan.steps_per_epoch, p.total_steps, p.step, p.samples_seen) == (12, 24, 24, 192)
    assert [s.step for s in p.steps] == list(range(1, 25))
    assert all(math.isfinite(s.loss) and 0 <= s.accuracy <= 1 for s in p.steps)
    assert [e.step for e in p.evals] == [0, 5, 10, 15, 20, 24]  # step 0, every 5, and the end
    assert [s.step for s in p.snapshots] == [0, 4, 8, 12, 16, 20, 24]
    assert [(e.epoch, e.step) for e in p.epoch_results] == [(1, 12), (2, 24)]
    assert p.val_accuracy == p.evals[-1].val_accuracy
    assert p.progress == 1.0 and p.eta_s == 0

    # The training clock: seconds never go back, and the history's agree with the snapshots'.
    seconds = [s.seconds for s in p.steps]
    assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(p.elapsed_s)
    assert {s.step: s.seconds for s in p.snapshots}[12] == p.steps[11].seconds

    # Snapshot 0 holds the initial weights; the last one the trained model's, and its probe prediction.
    assert torch.equal(p.snapshots[0].first_layer, initial.fc_1.weight.detach().reshape(16, 28, 28))
    trained = run.trained_model()
    assert torch.equal(p.snapshots[-1].first_layer, trained.fc_1.weight.detach().reshape(16, 28, 28))
    with torch.no_grad():
        expected = torch.softmax(trained(probe.reshape(1, 1, 28, 28)), dim=1)[0]
    assert torch.allclose(p.snapshots[-1].probe_probs, expected, atol=1e-6)
    assert torch.allclose(p.probe_probs, expected, atol=1e-6)
    assert p.snapshots[-1].probe_probs.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert p.snapshots[0].val_accuracy == p.evals[0].val_accuracy

    # The copy handed out is the run's model, in eval mode, with no gradients left behind.
    # The curves watched the validation digits, never the test set; the test set was used once, at the end.
    kept, held = data.validation_split(d.train)
    assert len(held) == 8 and p.eval_size == 8 and p.validation_size == 8
    assert p.epoch_results[-1].val_loss == pytest.approx(train.evaluate(trained, held)[0])
    assert p.evals[-1].val_loss == pytest.approx(train.evaluate(trained, held)[0])
    assert p.evals[-1].train_loss == pytest.approx(train.evaluate(trained, kept)[0])  # 96 <= 2,000: all of them
    assert p.final_test_accuracy == pytest.approx(train.evaluate(trained, d.test)[1])
    assert all(e.train_accuracy is not None for e in p.evals)

    assert trained is not run.model and not trained.training
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), run.model.parameters()))
    assert all(q.grad is None for q in trained.parameters())
    assert (p.params, p.macs) == (models.count_params(trained), models.count_macs(trained))


def test_a_point_due_at_an_epoch_end_takes_its_validation_half_from_that_epochs_pass(monkeypatch):
    # 12 validation digits held out of 150, the curves watch 5 of them; 138 trained on: 12 steps an epoch.
    d = _data(n_train=150, n_test=30)
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=2, batch_size=12, lr=1e-2), eval_every=6, snapshot_every=6,
                   eval_size=5)
    run = TrainingRun(spec, d)
    subset = run._recorder.subset
    measured = []  # the digit sets the recorder evaluated one by one

    def counting(model, digits, *args, **kwargs):
        measured.append(digits)
        return train.evaluate(model, digits, *args, **kwargs)

    monkeypatch.setattr(runs, "evaluate", counting)
    run.start()
    assert run.join(timeout=60)
    p = run.progress()
    assert p.plan.steps_per_epoch == 12 and len(subset) == 5 < p.validation_size
    assert [e.step for e in p.evals] == [0, 6, 12, 18, 24] and [e.step for e in p.epoch_results] == [12, 24]
    # The validation subset was evaluated on its own only for the points between epoch ends.
    assert sum(digits is subset for digits in measured) == 3
    # The points at the epoch ends are what the subset itself gives, from the weights of that moment.
    trained = run.trained_model()
    for point in (p.evals[2], p.evals[4]):
        snapshot = next(s for s in p.snapshots if s.step == point.step)
        model = runs.model_at(trained, snapshot)
        loss, accuracy = train.evaluate(model, subset)
        assert point.val_accuracy == accuracy and point.val_loss == pytest.approx(loss, rel=1e-6)
        assert point.train_loss == pytest.approx(train.evaluate(model, run._train_subset)[0], rel=1e-6)
        assert p.epoch_results[point.step // 12 - 1].val_loss == pytest.approx(
            train.evaluate(model, data.validation_split(d.train)[1])[0], rel=1e-6)


def test_the_test_subset_is_fixed_random_and_sorted(mnist):
    subset = runs.eval_subset(mnist.test, 2000)
    again = runs.eval_subset(mnist.test, 2000)
    assert len(subset) == 2000 and torch.equal(subset.images, again.images)
    # Random, not the first 2,000: digits from both halves of the test set.
    idx = torch.randperm(10000, generator=torch.Generator().manual_seed(config.SUBSET_SEED))[:2000].sort().values
    assert torch.equal(subset.labels, mnist.test.labels[idx])
    assert int((idx >= 5000).sum()) > 800
    assert runs.eval_subset(_digits(30), 2000).images.shape[0] == 30  # a small set is used whole


def test_cnn_run_records_its_filters_and_max_steps_finishes_mid_epoch():
    spec = RunSpec(models.TinyVGGConfig(channels=4), TrainConfig(epochs=5, batch_size=8, max_steps=7))
    run = TrainingRun(spec, _data(n_train=64, n_test=40))
    run.start()
    assert run.join(timeout=60)
    p = run.progress()
    assert p.status is RunStatus.FINISHED  # reaching max_steps is finishing, not stopping
    assert p.step == 7 == p.total_steps and p.epoch_results == ()
    assert p.first_layer.shape == (4, 3, 3) and p.total_units == 4
    assert torch.equal(p.snapshots[-1].first_layer, run.model.conv_1_1.weight.detach()[:, 0])
    assert p.final_test_accuracy == pytest.approx(train.evaluate(run.model, _data(64, 40).test)[1])
    assert all(q.is_contiguous() for q in run.model.parameters())


def test_fit_keeps_callbacks_off_the_training_clock():
    class Slow:
        def on_step_end(self, state):
            time.sleep(0.02)

    start = time.perf_counter()
    state = train.fit(models.build(models.FCConfig(), seed=0), _digits(40), TrainConfig(epochs=1, batch_size=4),
                      callbacks=[Slow()])
    wall = time.perf_counter() - start
    assert state.step == 10
    assert state.elapsed_s <= wall - 10 * 0.02  # the 0.2 s of sleeping is not training time


def test_pace_slows_a_run_down_without_changing_its_measured_speed():
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=4))
    pace = runs.Pace(0.05)
    run = TrainingRun(spec, _data(n_train=40), callbacks=[pace])
    start = time.perf_counter()
    run.start()
    assert run.join(timeout=60)
    wall = time.perf_counter() - start
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.step == 10
    assert wall >= 9 * 0.05  # at least 0.05 s from each step's end to the next one's
    assert pace.slept_s > 0
    assert p.elapsed_s <= wall - pace.slept_s  # the waits are off the training clock


# --- divergence ----------------------------------------------------------------------------------


class BlowUpAfter:
    """After step ``at``, scale the weights by 1e20 so the next forward pass overflows (inf/NaN loss),
    as a far too high learning rate does; remembers the weights each step's forward pass used."""

    def __init__(self, at: int) -> None:
        self.model, self.at = None, at
        self.used_by_step: dict[int, list[torch.Tensor]] = {}

    def on_step_end(self, state):
        self.used_by_step[state.step + 1] = [q.detach().clone() for q in self.model.parameters()]
        if state.step == self.at:
            with torch.no_grad():
                for q in self.model.parameters():
                    q.mul_(1e20)


def test_a_diverging_run_says_lower_the_learning_rate_and_keeps_the_last_good_weights():
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=2, batch_size=8))
    d = _data(n_train=64, n_test=40)
    blow = BlowUpAfter(at=3)
    run = TrainingRun(spec, d, callbacks=[blow])
    blow.model = run.model
    run.start()
    assert run.join(timeout=60)
    p = run.progress()
    assert p.status is RunStatus.DIVERGED
    assert "step 4" in p.message and "lower it" in p.message and "learning rate" in p.message
    assert p.step == 3 and not run.thread_alive
    # Step 3's loss was the last finite one: the model holds the weights that step used.
    kept = list(run.model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(kept, blow.used_by_step[3]))
    assert all(torch.isfinite(q).all() for q in kept)
    assert p.final_test_accuracy is not None and p.snapshots[-1].step == 3
    # What remains can still be used and saved.
    ck = checkpoints.load_bytes(run.checkpoint_bytes())
    assert ck.info.extra["run_status"] == "diverged"


def test_on_end_is_told_once_when_the_status_is_final_whatever_the_ending():
    # A worker process sleeps until this (engines.local._worker_main), then sends the final report:
    # by then the status and the test accuracy must be the run's last.
    def ended(run_of: list) -> None:
        run = run_of[0]
        seen.append((run.status, run.progress().final_test_accuracy))

    d = _data(n_train=64, n_test=40)
    for spec, callbacks, outcome in (
        (RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=8)), [], RunStatus.FINISHED),
        (RunSpec(models.FCConfig(), TrainConfig(epochs=2, batch_size=8)), [BlowUpAfter(at=3)], RunStatus.DIVERGED),
    ):
        seen, run_of = [], []
        run = TrainingRun(spec, d, callbacks=callbacks, on_end=lambda: ended(run_of))
        run_of.append(run)
        for c in callbacks:
            c.model = run.model
        run.start()
        assert run.join(timeout=60)
        assert seen == [(outcome, run.progress().final_test_accuracy)] and seen[0][1] is not None
    stopped, run_of = [], []
    run = TrainingRun(_long_run().spec, _data(), on_end=lambda: stopped.append(run_of[0].status))
    run_of.append(run)
    run.start()
    _wait_until(lambda: run.progress().step >= 3)
    assert stopped == []  # not while it trains
    run.stop()
    assert run.join(timeout=60) and stopped == [RunStatus.STOPPED]


# --- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_bytes_round_trip_through_load_bytes():
    spec = RunSpec(models.FCConfig(hidden=(8,)), TrainConfig(epochs=1, batch_size=16, seed=3))
    run = TrainingRun(spec, _data(n_train=52, n_test=30))  # 4 of the 52 are held out for validation
    with pytest.raises(RuntimeError):
        run.checkpoint_bytes()  # not started, nothing to save
    run.start()
    assert run.join(timeout=60)
    ck = checkpoints.load_bytes(run.checkpoint_bytes(), name="my.safetensors")
    assert ck.config == models.FCConfig(hidden=(8,))
    assert all(torch.equal(a, b) for a, b in zip(ck.model.state_dict().values(), run.model.state_dict().values()))
    assert ck.info.test_accuracy == pytest.approx(run.progress().final_test_accuracy)
    assert (ck.info.epochs, ck.info.seed) == (1, 3)
    assert ck.info.extra["steps"] == "3" and ck.info.extra["train_size"] == "48"


# --- recording at a budget ------------------------------------------------------------------------


def test_an_automatic_cadence_keeps_recording_within_its_budget_and_a_chosen_one_is_kept():
    # Each evaluation reads 2,000 digits, while 20 steps of one digit cost far less: evaluating
    # every 20 steps as planned would take most of the run's time.
    # 24,000 digits hold 2,000 out for validation (the subset the curves watch); 64 of the rest are trained on.
    d = _data(n_train=24_000, n_test=100)
    budgeted = TrainingRun(RunSpec(models.FCConfig(), TrainConfig(epochs=10, batch_size=1), train_size=64), d)  # 640 steps
    assert budgeted.plan.eval_every == round(budgeted.plan.total_steps / config.EVAL_POINTS) and budgeted.plan.adapt_eval
    budgeted.start()
    assert budgeted.join(timeout=120)
    p = budgeted.progress()
    planned = p.total_steps // p.plan.eval_every + 1
    assert p.status is RunStatus.FINISHED
    assert 2 <= len(p.evals) < planned  # postponed, not dropped: the curve still has points
    assert p.evals[0].step == 0 and p.evals[-1].step == p.step
    assert budgeted._recorder.recording_share() <= 2 * config.RECORDING_BUDGET

    chosen = TrainingRun(RunSpec(models.FCConfig(), TrainConfig(epochs=10, batch_size=1),
                                 train_size=64, eval_every=budgeted.plan.eval_every), d)
    assert not chosen.plan.adapt_eval
    chosen.start()
    assert chosen.join(timeout=120)
    every = chosen.plan.eval_every  # every one of them, and the last step (finish)
    total = chosen.plan.total_steps
    assert [e.step for e in chosen.progress().evals] == [*range(0, total + 1, every), total]


def test_a_run_the_budget_leaves_no_points_still_has_a_start_a_middle_and_an_end(monkeypatch):
    monkeypatch.setattr(config, "RECORDING_BUDGET", 0.0)  # no evaluation is ever affordable
    run = TrainingRun(RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=8), train_size=88),
                      _data(n_train=100, n_test=30))  # 11 steps
    run.start()
    assert run.join(timeout=60)
    p = run.progress()
    assert p.plan.adapt_eval and p.total_steps == 11
    assert [e.step for e in p.evals] == [0, 5, 11]
    chosen = TrainingRun(RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=8), train_size=88, eval_every=20),
                         _data(n_train=100, n_test=30))
    chosen.start()
    assert chosen.join(timeout=60)
    assert [e.step for e in chosen.progress().evals] == [0, 11]  # its cadence, kept: no point forced in the middle


def test_an_evaluation_row_names_the_validation_digits_it_measured_and_keeps_the_old_names():
    from digitrec.history import EvalRow

    row = EvalRow(step=3, epoch=1, seconds=0.5, val_accuracy=0.9, val_loss=0.3)
    assert (row.val_accuracy, row.val_loss) == (0.9, 0.3)
    # Code written before the rename (when runs watched the test set) still reads the same numbers.
    assert (row.test_accuracy, row.test_loss) == (0.9, 0.3)


def test_snapshots_keep_the_whole_network_within_the_budget_and_always_at_the_end(monkeypatch):
    """Every snapshot of a small network keeps its weights; under a tight budget every k-th does, and the last."""
    d = _data(n_train=104, n_test=60)
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=2, batch_size=8, lr=1e-2), eval_every=12, snapshot_every=4)
    initial = models.build(spec.model, seed=0)
    size = sum(t.numel() * t.element_size() for t in initial.state_dict().values())
    run = TrainingRun(spec, d)
    run.start()
    assert run.join(timeout=60)
    snaps, trained = run.progress().snapshots, run.trained_model()
    assert all(s.weights is not None for s in snaps)
    at_start, at_end = runs.model_at(trained, snaps[0]), runs.model_at(trained, snaps[-1])
    assert all(torch.equal(a, b) for a, b in zip(at_start.state_dict().values(), initial.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(at_end.state_dict().values(), trained.state_dict().values()))
    assert at_end is not trained and not at_end.training

    # Room for two networks' weights over the 8 planned snapshots: every 4th keeps them (0 and 4 of 0..6), and the
    # last (step 24, a regular snapshot too) is given them when the run ends.
    monkeypatch.setattr(config, "SNAPSHOT_WEIGHTS_BUDGET", 2 * size)
    run = TrainingRun(spec, d)
    run.start()
    assert run.join(timeout=60)
    snaps = run.progress().snapshots
    assert [s.step for s in snaps] == [0, 4, 8, 12, 16, 20, 24]
    assert [i for i, s in enumerate(snaps) if s.weights is not None] == [0, 4, 6]
    with pytest.raises(ValueError, match="step 4"):
        runs.model_at(run.trained_model(), snaps[1])


def test_likeness_to_start_is_each_units_cosine_similarity():
    start = torch.randn(4, 3, 3)
    now = torch.stack([start[0], -start[1], 2 * start[2], torch.zeros(3, 3) + start[3].mean()])
    alike = runs.likeness_to_start(start, now)
    assert alike[:3].tolist() == pytest.approx([1.0, -1.0, 1.0])
    a, b = start[3].flatten().double(), now[3].flatten().double()
    assert float(alike[3]) == pytest.approx(float(a @ b / (a.norm() * b.norm())), abs=1e-9)
