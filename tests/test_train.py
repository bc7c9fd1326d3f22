"""train: the loop learns, is reproducible, reports through callbacks, obeys TrainControl
from another thread, recovers from divergence, and evaluates without side effects."""

from __future__ import annotations

import dataclasses
import math
import threading
import time

import pytest
import torch
from torch import nn

from digitrec import config, data, models, train
from digitrec.errors import DigitrecError, InvalidConfig, TrainingDiverged
from digitrec.shift import shift_digit
from digitrec.train import History, TrainConfig, TrainControl, TrainState
from tests.helpers import wait_until as _wait_until


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# --- it learns ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, lr",
    [(models.FCConfig(hidden=(16, 16)), 1e-2), (models.TinyVGGConfig(), 3e-3)],
    ids=["fcnet-16-16", "tinyvgg"],
)
def test_both_models_overfit_64_real_digits(mnist, config, lr):
    digits = mnist.train.subset(64)
    model = models.build(config, seed=0)
    _, acc_before = train.evaluate(model, digits)
    state = train.fit(model, digits, TrainConfig(epochs=60, batch_size=32, lr=lr, evaluate_each_epoch=False))
    loss, acc = train.evaluate(model, digits)
    assert acc_before < 0.3  # it really had to learn these
    assert acc == 1.0
    assert loss < 0.05
    assert state.step == 60 * 2 and state.samples_seen == 60 * 64 and not state.stopped


# --- reproducibility -----------------------------------------------------------------------


@pytest.mark.parametrize("config", [models.FCConfig(), models.TinyVGGConfig()], ids=["fcnet", "tinyvgg"])
def test_same_seeds_give_bit_identical_weights_and_other_seeds_do_not(config):
    digits = data.synthetic_digits(96, seed=0)

    def run(model_seed: int, train_seed: int) -> list[torch.Tensor]:
        model = models.build(config, seed=model_seed)
        train.fit(model, digits, TrainConfig(epochs=2, batch_size=32, seed=train_seed, evaluate_each_epoch=False))
        return _weights(model)

    first = run(0, 0)
    assert _same(first, run(0, 0))
    assert not _same(first, run(1, 1))
    # The training seed alone (same initial weights) changes the batch order and so the result.
    assert not _same(first, run(0, 1))


# --- callbacks and TrainState ---------------------------------------------------------------


class Recorder:
    """Keeps a copy of the state at every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def _keep(self, event: str, state: TrainState) -> None:
        snap = {k: getattr(state, k) for k in state.__dataclass_fields__}
        snap.update(progress=state.progress, total_steps=state.total_steps, eta_s=state.eta_s)
        self.events.append((event, snap))

    def on_fit_start(self, state):
        self._keep("fit_start", state)

    def on_step_end(self, state):
        self._keep("step_end", state)

    def on_epoch_end(self, state):
        self._keep("epoch_end", state)

    def on_fit_end(self, state):
        self._keep("fit_end", state)

    def of(self, event: str) -> list[dict]:
        return [s for e, s in self.events if e == event]


def test_callbacks_fire_in_order_with_a_sensible_state():
    digits, test = data.synthetic_digits(100, seed=0), data.synthetic_digits(30, seed=1)
    model = models.build(models.FCConfig(), seed=0)
    rec, history = Recorder(), History()
    final = train.fit(
        model, digits, TrainConfig(epochs=2, batch_size=32), callbacks=[rec, history], test=test
    )

    # 100 digits in batches of 32: 32, 32, 32, 4 -> 4 steps per epoch.
    names = [e for e, _ in rec.events]
    assert names == ["fit_start"] + ["step_end"] * 4 + ["epoch_end"] + ["step_end"] * 4 + ["epoch_end"] + ["fit_end"]

    start = rec.of("fit_start")[0]
    assert (start["step"], start["epoch"], start["samples_seen"]) == (0, 0, 0)
    assert (start["epochs"], start["steps_per_epoch"], start["total_steps"]) == (2, 4, 8)
    assert start["progress"] == 0 and math.isnan(start["eta_s"])

    steps = rec.of("step_end")
    assert [s["step"] for s in steps] == list(range(1, 9))
    assert [s["epoch"] for s in steps] == [1] * 4 + [2] * 4
    assert [s["samples_seen"] for s in steps] == [32, 64, 96, 100, 132, 164, 196, 200]
    sizes = [32, 32, 32, 4] * 2
    for s, batch in zip(steps, sizes):
        assert math.isfinite(s["loss"]) and s["loss"] > 0
        assert 0.0 <= s["accuracy"] <= 1.0
        assert s["accuracy"] * batch == pytest.approx(round(s["accuracy"] * batch))  # a count / batch
        assert s["samples_per_s"] > 0
        assert s["samples_per_s"] == pytest.approx(s["samples_seen"] / s["elapsed_s"])
        assert s["progress"] == s["step"] / 8
        assert s["eta_s"] >= 0
    elapsed = [s["elapsed_s"] for s in steps]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:]))
    assert steps[-1]["eta_s"] == 0

    epochs = rec.of("epoch_end")
    assert [(e["epoch"], e["step"]) for e in epochs] == [(1, 4), (2, 8)]
    assert all(e["test_accuracy"] is not None and 0 <= e["test_accuracy"] <= 1 for e in epochs)
    # The last epoch's test numbers are those of the final model.
    assert (epochs[-1]["test_loss"], epochs[-1]["test_accuracy"]) == pytest.approx(train.evaluate(model, test))

    end = rec.of("fit_end")[0]
    assert end["step"] == 8 and end["stopped"] is False and end["elapsed_s"] >= elapsed[-1]
    assert final.step == 8 and final.progress == 1.0

    # History keeps the same numbers.
    assert [h.step for h in history.steps] == list(range(1, 9))
    assert [h.loss for h in history.steps] == [s["loss"] for s in steps]
    assert [h.accuracy for h in history.steps] == [s["accuracy"] for s in steps]
    assert [h.seconds for h in history.steps] == elapsed
    assert [h.samples_per_s for h in history.steps] == [s["samples_per_s"] for s in steps]
    assert [(h.epoch, h.step, h.val_accuracy) for h in history.epochs] == [
        (e["epoch"], e["step"], e["test_accuracy"]) for e in epochs
    ]


def test_history_can_keep_every_nth_step_and_no_test_means_no_test_numbers():
    history = History(every=3)
    train.fit(
        models.build(models.FCConfig(), seed=0),
        data.synthetic_digits(64),
        TrainConfig(epochs=2, batch_size=8),
        callbacks=[history],
    )
    assert [h.step for h in history.steps] == [3, 6, 9, 12, 15]
    assert [(h.epoch, h.val_accuracy) for h in history.epochs] == [(1, None), (2, None)]


def test_fit_on_mnist_trains_on_train_and_tests_on_test():
    split = data.MNIST(train=data.synthetic_digits(40, seed=0), test=data.synthetic_digits(20, seed=5))
    model = models.build(models.FCConfig(), seed=0)
    rec = Recorder()
    state = train.fit(model, split, TrainConfig(epochs=1, batch_size=10), callbacks=[rec])
    assert state.samples_seen == 40 and state.steps_per_epoch == 4
    assert (state.test_loss, state.test_accuracy) == pytest.approx(train.evaluate(model, split.test))
    no_eval = train.fit(
        models.build(models.FCConfig(), seed=0), split, TrainConfig(epochs=1, evaluate_each_epoch=False)
    )
    assert no_eval.test_accuracy is None


# --- TrainControl from another thread -------------------------------------------------------


class StepLog:
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.events: list[str] = []

    def on_step_end(self, state):
        self.steps.append(state.step)

    def on_epoch_end(self, state):
        self.events.append("epoch_end")

    def on_fit_end(self, state):
        self.events.append("fit_end")


def _fit_in_thread(control: TrainControl, log: StepLog) -> tuple[threading.Thread, dict]:
    """FCNet on 64 synthetic digits, one digit per step, far more steps than a test waits for."""
    result: dict = {}
    model = models.build(models.FCConfig(), seed=0)
    config = TrainConfig(epochs=1000, batch_size=1, evaluate_each_epoch=False)

    def run() -> None:
        try:
            result["state"] = train.fit(model, data.synthetic_digits(64), config, callbacks=[log], control=control)
        except BaseException as e:  # re-raised in the test's thread
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_pause_step_resume_and_stop_from_another_thread():
    control, log = TrainControl(), StepLog()
    control.pause()
    thread, result = _fit_in_thread(control, log)

    time.sleep(0.3)
    assert log.steps == [] and thread.is_alive() and control.paused

    control.step(3)
    _wait_until(lambda: len(log.steps) >= 3)
    time.sleep(0.3)  # it must now be waiting again
    assert log.steps == [1, 2, 3]
    assert control.paused and thread.is_alive()

    control.resume()
    assert not control.paused
    _wait_until(lambda: len(log.steps) >= 50)

    control.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    state = result["state"]
    assert state.stopped is True and control.stopped
    assert state.step == len(log.steps) == log.steps[-1] < state.total_steps
    assert log.events[-1] == "fit_end"


def test_a_paused_run_ends_when_stopped():
    control, log = TrainControl(), StepLog()
    control.pause()
    thread, result = _fit_in_thread(control, log)
    time.sleep(0.2)
    assert thread.is_alive()
    control.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert result["state"].stopped is True and result["state"].step == 0
    assert log.steps == [] and log.events == ["fit_end"]  # no epoch ended, the fit did


def test_stop_before_start_runs_no_step_and_a_fresh_control_runs_everything():
    control = TrainControl()
    control.stop()
    model = models.build(models.FCConfig(), seed=0)
    before = _weights(model)
    state = train.fit(model, data.synthetic_digits(20), TrainConfig(epochs=2, batch_size=5), control=control)
    assert state.stopped and state.step == 0 and _same(before, _weights(model))
    state = train.fit(model, data.synthetic_digits(20), TrainConfig(epochs=2, batch_size=5), control=TrainControl())
    assert not state.stopped and state.step == 8


class _EpochLog:
    def __init__(self) -> None:
        self.epochs: list[tuple[int, int]] = []  # (epoch, step) at each epoch's end

    def on_epoch_end(self, state: TrainState) -> None:
        self.epochs.append((state.epoch, state.step))


def test_max_steps_ends_fit_mid_epoch_as_finished_with_the_same_weights_as_stopping_there():
    digits, test = data.synthetic_digits(20, seed=0), data.synthetic_digits(10, seed=1)  # 4 steps of 5 per epoch
    model, log = models.build(models.FCConfig(), seed=0), _EpochLog()
    state = train.fit(model, digits, TrainConfig(epochs=3, batch_size=5, max_steps=6), callbacks=[log], test=test)
    assert (state.step, state.epoch, state.total_steps, state.progress) == (6, 2, 6, 1.0)
    assert state.stopped is False  # reaching max_steps is finishing, not stopping
    assert log.epochs == [(1, 4)]  # the unfinished second epoch is not evaluated

    # The same 6 batches as a run stopped by hand after its 6th step.
    control = TrainControl()

    class StopAt6:
        def on_step_end(self, s: TrainState) -> None:
            if s.step == 6:
                control.stop()

    by_hand = models.build(models.FCConfig(), seed=0)
    stopped = train.fit(by_hand, digits, TrainConfig(epochs=3, batch_size=5), callbacks=[StopAt6()], control=control)
    assert stopped.stopped and stopped.step == 6
    assert _same(_weights(model), _weights(by_hand))


def test_max_steps_at_an_epoch_end_evaluates_that_epoch_and_starts_no_other():
    model, log = models.build(models.FCConfig(), seed=0), _EpochLog()
    test = data.synthetic_digits(10, seed=1)
    state = train.fit(model, data.synthetic_digits(20), TrainConfig(epochs=5, batch_size=5, max_steps=8),
                      callbacks=[log], test=test)
    assert (state.step, state.epoch, state.stopped) == (8, 2, False)
    assert log.epochs == [(1, 4), (2, 8)] and state.test_accuracy is not None
    # More steps than the epochs hold: the epochs decide.
    state = train.fit(model, data.synthetic_digits(20), TrainConfig(epochs=1, batch_size=5, max_steps=100))
    assert (state.step, state.total_steps) == (4, 4)


@pytest.mark.parametrize("max_steps", [0, -3, 2.5])
def test_max_steps_must_be_a_whole_number_from_one(max_steps):
    with pytest.raises(InvalidConfig, match="max steps must be a whole number from 1 up"):
        TrainConfig(max_steps=max_steps)


def test_train_control_step_budget_without_a_thread():
    control = TrainControl()
    assert control.wait_for_turn() and not control.paused  # running freely
    control.pause()
    assert control.paused
    control.step(2)
    assert not control.paused
    assert control.wait_for_turn() and control.wait_for_turn()
    assert control.paused  # budget used up: paused again
    control.stop()
    assert control.wait_for_turn() is False  # a stop wins over a pause
    assert not control.paused and control.stopped


# --- divergence ----------------------------------------------------------------------------


class BlowUpAfter:
    """Records the weights each step will use, then scales them by 1e20 after step ``at`` so
    the next forward pass overflows float32 (inf/NaN loss), as a far too high learning rate does."""

    def __init__(self, model: nn.Module, at: int) -> None:
        self.model, self.at = model, at
        self.used_by_step: dict[int, list[torch.Tensor]] = {}

    def on_fit_start(self, state):
        self.used_by_step[1] = _weights(self.model)

    def on_step_end(self, state):
        self.used_by_step[state.step + 1] = _weights(self.model)
        if state.step == self.at:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(1e20)


@pytest.mark.parametrize("config", [models.FCConfig(), models.TinyVGGConfig()], ids=["fcnet", "tinyvgg"])
def test_divergence_raises_and_keeps_the_last_weights_that_gave_a_finite_loss(config):
    model = models.build(config, seed=0)
    blow_up = BlowUpAfter(model, at=3)
    rec = Recorder()
    with pytest.raises(TrainingDiverged) as info:
        train.fit(model, data.synthetic_digits(64), TrainConfig(epochs=1, batch_size=8), callbacks=[blow_up, rec])

    message = str(info.value)
    assert "step 4" in message and "learning rate" in message and "lower it" in message
    assert isinstance(info.value, DigitrecError)
    assert [s["step"] for s in rec.of("step_end")] == [1, 2, 3]
    # Step 3 was the last one whose loss was finite: the model holds the weights it used.
    after = _weights(model)
    assert all(torch.isfinite(p).all() for p in after)
    assert _same(after, blow_up.used_by_step[3])
    assert not _same(after, blow_up.used_by_step[2]) and not _same(after, blow_up.used_by_step[4])
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_model_can_train_again_after_diverging():
    model = models.build(models.FCConfig(), seed=0)
    with pytest.raises(TrainingDiverged):
        train.fit(model, data.synthetic_digits(32), TrainConfig(epochs=1, batch_size=8), callbacks=[BlowUpAfter(model, 1)])
    state = train.fit(model, data.synthetic_digits(32), TrainConfig(epochs=1, batch_size=8))
    assert state.step == 4 and math.isfinite(state.loss)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lr": 0}, "learning rate"),
        ({"lr": -0.01}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"lr": float("inf")}, "learning rate"),
        ({"batch_size": 0}, "batch size"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, momentum, adam"),
        ({"augment_shift": 5}, "augmentation shift"),
        ({"augment_rotation": 31.0}, "augmentation rotation"),
        ({"epochs": 0}, "epochs"),
        ({"momentum": 1.0}, "momentum"),
    ],
)
def test_invalid_train_config_raises_with_a_sentence(kwargs, words):
    with pytest.raises(InvalidConfig) as info:
        TrainConfig(**kwargs)
    message = str(info.value)
    assert message.startswith("Cannot train: ") and message.endswith(".")
    assert words in message
    assert repr(next(iter(kwargs.values()))) in message or str(next(iter(kwargs.values()))) in message


def test_invalid_train_config_lists_every_problem():
    with pytest.raises(InvalidConfig) as info:
        TrainConfig(lr=0, batch_size=0)
    assert "learning rate" in str(info.value) and "batch size" in str(info.value)


def test_every_optimizer_trains_and_is_explained_in_one_sentence():
    for optimizer, lr in (("sgd", 0.05), ("momentum", 0.05), ("adam", 1e-3)):
        model = models.build(models.FCConfig(), seed=0)
        made = train.make_optimizer(model, TrainConfig(optimizer=optimizer, lr=lr))
        assert isinstance(made, torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)
        if optimizer != "adam":
            assert made.defaults["momentum"] == (0.9 if optimizer == "momentum" else 0)
        sentence = config.OPTIMIZER_EXPLANATIONS[optimizer]
        assert sentence.endswith(".") and sentence.count(". ") == 0
        before = _weights(model)
        train.fit(model, data.synthetic_digits(32), TrainConfig(epochs=1, batch_size=16, optimizer=optimizer, lr=lr))
        assert not _same(before, _weights(model))


# --- evaluate and predictions ------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_matches_a_manual_count_restores_the_mode_and_makes_no_gradients(mnist, fcnet, training):
    digits = mnist.test.subset(300)
    fcnet.train(training)
    loss, acc = train.evaluate(fcnet, digits, batch_size=64)  # 300 = 4 x 64 + 44
    assert fcnet.training is training
    assert all(m.training is training for m in fcnet.modules())
    assert all(p.grad is None for p in fcnet.parameters())

    with torch.no_grad():
        logits = fcnet(data.to_input(digits.images))  # (300, 10)
    correct = int((logits.argmax(dim=1) == digits.labels).sum())
    assert acc == correct / 300
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, digits.labels).item(), rel=1e-5)


def test_evaluate_of_a_trained_model_on_what_it_learned(mnist):
    digits = mnist.train.subset(32)
    model = models.build(models.FCConfig(), seed=0)
    train.fit(model, digits, TrainConfig(epochs=40, batch_size=32, lr=1e-2, evaluate_each_epoch=False))
    assert train.evaluate(model, digits, batch_size=5)[1] == 1.0


def test_predictions_are_probabilities_over_classes_per_digit(mnist, tinyvgg):
    digits = mnist.test.subset(50)
    tinyvgg.train()
    probs = train.predictions(tinyvgg, digits, batch_size=16)
    assert probs.shape == (50, 10)
    assert tinyvgg.training and all(p.grad is None for p in tinyvgg.parameters())
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(50))  # each row: one digit's 10 classes
    assert not torch.allclose(probs.sum(dim=0), torch.ones(10))  # columns are not distributions
    assert (probs >= 0).all()
    with torch.no_grad():
        expected = torch.softmax(tinyvgg(data.to_input(digits.images)), dim=1)
    torch.testing.assert_close(probs, expected)
    assert train.predictions(tinyvgg, digits.subset(0)).shape == (0, 10)


# --- memory format -------------------------------------------------------------------------------


def test_fit_leaves_a_conv_model_in_the_default_memory_format(tinyvgg):
    train.fit(tinyvgg, data.synthetic_digits(64), TrainConfig(epochs=1, batch_size=32))
    for name, p in tinyvgg.named_parameters():
        assert p.is_contiguous(), name
    # A 10 -> 10 conv weight (10, 10, 3, 3) cannot be both contiguous and channels-last.
    assert not tinyvgg.conv_1_2.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert tinyvgg(torch.rand(2, 1, 28, 28)).is_contiguous()


def test_a_stopped_conv_run_also_leaves_the_default_memory_format(tinyvgg):
    control = TrainControl()

    class StopAfterOne:
        def on_step_end(self, state):
            control.stop()

    state = train.fit(tinyvgg, data.synthetic_digits(64), TrainConfig(epochs=1, batch_size=8),
                      callbacks=[StopAfterOne()], control=control)
    assert state.stopped and state.step == 1
    assert all(p.is_contiguous() for p in tinyvgg.parameters())


def test_steps_granted_before_a_resume_do_not_carry_over_to_the_next_step():
    """step(10), two batches, resume(), step(1): exactly one batch, then paused again."""
    control = train.TrainControl()
    control.step(10)
    assert control.wait_for_turn() and control.wait_for_turn()
    control.resume()
    control.step(1)
    assert control.wait_for_turn()
    assert control.paused  # the one granted batch is used up; the loop would now wait


# --- the lab: plain SGD, augmentation and shuffled pixels inside fit ---------------------------------


def test_one_plain_sgd_step_is_w_minus_lr_times_the_gradient():
    """The formula of lesson 6, checked against the weights fit leaves: w_new = w - lr * dloss/dw."""
    digits = data.synthetic_digits(16)
    model = models.build(models.FCConfig(hidden=(8,)), seed=0)
    before = _weights(model)
    x, y = data.to_input(digits.images), digits.labels  # one batch of all 16, in order (no shuffle needed:
    loss = nn.functional.cross_entropy(model(x), y)  # the mean loss of a whole batch does not depend on it)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    lr = 0.3
    train.fit(model, digits, TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=lr))
    for w0, g, w1 in zip(before, grads, _weights(model)):
        torch.testing.assert_close(w1, w0 - lr * g, rtol=1e-5, atol=1e-6)


def test_momentum_differs_from_plain_sgd_from_the_second_step_on():
    digits = data.synthetic_digits(32)
    results = {}
    for optimizer in ("sgd", "momentum"):
        model = models.build(models.FCConfig(hidden=(8,)), seed=0)
        train.fit(model, digits, TrainConfig(epochs=1, batch_size=16, optimizer=optimizer, lr=0.1))
        results[optimizer] = _weights(model)
    assert not _same(results["sgd"], results["momentum"])


class _Batches:
    """Records the input batches the model receives in training mode."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        model.register_forward_pre_hook(lambda m, args: self.seen.append(args[0].detach().clone()) if m.training else None)


def test_fit_augments_training_batches_but_keeps_the_batch_order():
    digits = data.synthetic_digits(64)
    plain_model, aug_model = (models.build(models.FCConfig(hidden=(8,)), seed=0) for _ in range(2))
    plain, augmented = _Batches(plain_model), _Batches(aug_model)
    train.fit(plain_model, digits, TrainConfig(epochs=1, batch_size=32, seed=3, optimizer="sgd", lr=0.1))
    train.fit(aug_model, digits, TrainConfig(epochs=1, batch_size=32, seed=3, optimizer="sgd", lr=0.1,
                                             augment_shift=2))
    assert len(plain.seen) == len(augmented.seen) == 2
    for a, b in zip(plain.seen, augmented.seen):
        assert a.shape == b.shape and not torch.equal(a, b)
        # Same digits in the same order, only moved: every augmented digit is a whole-pixel shift of its own.
        for digit, moved in zip(a[:, 0], b[:, 0]):
            assert any(torch.allclose(shift_digit(digit, dx, dy), moved, atol=1e-5) for dx in range(-2, 3) for dy in range(-2, 3))


def test_fit_reads_shuffled_pixels_in_the_fixed_order_for_training_and_testing():
    digits = data.synthetic_digits(32)
    model = models.build(models.FCConfig(hidden=(8,)), seed=0)
    seen = _Batches(model)
    tested: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: tested.append(args[0].detach().clone()) if not m.training else None)
    train.fit(model, digits, TrainConfig(epochs=1, batch_size=32, shuffle_pixels=True), test=digits)
    order = data.pixel_permutation()
    assert len(seen.seen) == 1 and tested
    batch = seen.seen[0]  # (32, 1, 28, 28), the digits in a seeded random order, pixels shuffled
    unshuffled = data.permute_pixels(batch, torch.argsort(order))
    stored = data.to_input(digits.images)
    for digit in unshuffled:
        assert any(torch.equal(digit, s) for s in stored)
    # The test digits went through the same permutation, in their stored order.
    torch.testing.assert_close(tested[0], data.permute_pixels(stored, order))


class _Rates:
    """A callback keeping the optimizer's learning rate after every step."""

    def __init__(self, optimizer_of) -> None:
        self.optimizer_of, self.rates = optimizer_of, []

    def on_step_end(self, state: TrainState) -> None:
        self.rates.append(self.optimizer_of().param_groups[0]["lr"])


def test_the_one_cycle_schedule_warms_up_to_the_rate_then_ends_near_zero(monkeypatch):
    made = []
    real = train.make_optimizer
    monkeypatch.setattr(train, "make_optimizer", lambda model, cfg: made.append(real(model, cfg)) or made[-1])
    rates = _Rates(lambda: made[0])
    config_ = TrainConfig(epochs=2, batch_size=4, lr=0.01, schedule="onecycle", evaluate_each_epoch=False)
    train.fit(models.build(models.FCConfig(), seed=0), data.synthetic_digits(40), config_, callbacks=[rates])
    assert len(rates.rates) == 20  # stepped once per batch, 10 a epoch
    # A callback sees the rate the next step will use: the first step used lr / 25, the start.
    used = [0.01 / 25] + rates.rates[:-1]
    assert made[0].param_groups[0]["initial_lr"] == pytest.approx(0.01 / 25)
    peak = max(range(20), key=used.__getitem__)
    assert used[peak] == pytest.approx(0.01, rel=0.05) and 4 <= peak + 1 <= 8  # about 30 % in
    assert used[-1] < 1e-5  # the last step: about 0
    assert all(a <= b for a, b in zip(used[:peak], used[1:peak + 1]))  # up, then
    assert all(a >= b for a, b in zip(used[peak:], used[peak + 1:]))  # down


def test_a_copy_of_the_state_has_every_field_and_stays_as_it_was():
    state = train.TrainState(epochs=3, steps_per_epoch=10, max_steps=25, epoch=2, step=14, samples_seen=1792,
                             loss=0.5, accuracy=0.875, samples_per_s=900.0, elapsed_s=2.0, test_loss=0.4,
                             test_accuracy=0.9, mixed_precision=True, hand_backward=True)
    kept = state.copy()
    assert kept == state and kept is not state and type(kept) is train.TrainState
    assert {f.name: getattr(kept, f.name) for f in dataclasses.fields(state)} == dataclasses.asdict(state)
    state.step, state.loss, state.stopped = 15, 0.25, True  # fit goes on changing its own
    assert (kept.step, kept.loss, kept.stopped, kept.total_steps) == (14, 0.5, False, 25)


def test_adam_updates_every_weight_in_one_fused_step_with_the_same_arithmetic():
    model = models.build(models.FCConfig(), seed=0)
    fused = train.make_optimizer(model, TrainConfig(optimizer="adam"))
    assert fused.defaults["fused"]
    plain_model = models.build(models.FCConfig(), seed=0)
    plain = torch.optim.Adam(plain_model.parameters(), lr=config.LR)
    x, y = data.to_input(data.synthetic_digits(16).images), data.synthetic_digits(16).labels
    for m, opt in ((model, fused), (plain_model, plain)):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_weights(model), _weights(plain_model)))


def test_only_a_network_with_convolutions_trains_in_bfloat16_and_the_weights_stay_float32():
    digits = data.synthetic_digits(32)
    cnn, fc = models.build(models.TinyVGGConfig(channels=2), seed=0), models.build(models.FCConfig(), seed=0)
    cpu_has_bf16 = train.bfloat16_supported(torch.device("cpu"))
    state = train.fit(cnn, digits, TrainConfig(epochs=1, batch_size=16))
    assert state.mixed_precision == cpu_has_bf16 and math.isfinite(state.loss)
    assert all(p.dtype == torch.float32 for p in cnn.parameters())
    assert not train.fit(fc, digits, TrainConfig(epochs=1, batch_size=16)).mixed_precision
    off = train.fit(models.build(models.TinyVGGConfig(channels=2), seed=0), digits,
                    TrainConfig(epochs=1, batch_size=16, mixed_precision=False))
    assert not off.mixed_precision
