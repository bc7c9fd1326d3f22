"""race: the table's numbers and the explanation's, computed from a hand-made history
(and once from a real run), checked against values worked out by hand; and running a race
(one after the other, together, stopped) on synthetic digits."""

from __future__ import annotations

import pytest

from digitrec import config, data, models, race, runs
from digitrec.errors import InvalidConfig
from digitrec.history import EvalRow
from digitrec.runs import RunStatus
from digitrec.spec import RunSpec
from digitrec.train import TrainConfig
from tests.helpers import small_mnist as _data, wait_until as _wait_until


def _evals(points: list[tuple[float, float]]) -> list[EvalRow]:
    return [EvalRow(step=10 * i, epoch=1, seconds=s, val_accuracy=a, val_loss=0.0) for i, (s, a) in enumerate(points)]


# FCNet 784-16-16-10: a Linear layer does in x out multiply-adds and has (in + 1) x out weights.
FC_MACS = 784 * 16 + 16 * 16 + 16 * 10
FC_PARAMS = (784 * 16 + 16) + (16 * 16 + 16) + (16 * 10 + 10)
# TinyVGG(10): a conv does, per output value, in_channels x 3 x 3 (padding 1 keeps 28x28, then 14x14).
CNN_MACS = 28 * 28 * 10 * 9 + 28 * 28 * 10 * 90 + 2 * 14 * 14 * 10 * 90 + 490 * 10
CNN_PARAMS = (9 * 10 + 10) + 3 * (90 * 10 + 10) + (490 * 10 + 10)


def test_hand_counts_match_the_models():
    fc, cnn = models.build(models.FCConfig()), models.build(models.TinyVGGConfig())
    assert (models.count_macs(fc), models.count_params(fc)) == (FC_MACS, FC_PARAMS) == (12960, 13002)
    assert (models.count_macs(cnn), models.count_params(cnn)) == (CNN_MACS, CNN_PARAMS) == (1133860, 7740)


def test_seconds_to_reach_is_the_first_evaluation_at_or_above_the_target():
    evals = _evals([(0.0, 0.10), (1.0, 0.93), (2.0, 0.951), (3.0, 0.949), (4.0, 0.97), (5.0, 0.975)])
    assert race.seconds_to_reach(evals, 0.95) == 2.0  # not 3.0: a later dip does not undo it
    assert race.seconds_to_reach(evals, 0.97) == 4.0  # exactly at the target counts
    assert race.seconds_to_reach(evals, 0.98) is None
    assert race.seconds_to_reach([], 0.5) is None


def _fc_row() -> race.RaceRow:
    # 60,000 digits in 3.0 s of training: 20,000 digits/s; 3.0 s per 60,000-digit epoch.
    return race.race_row(
        name="FCNet 784-16-16-10", params=FC_PARAMS, macs_forward=FC_MACS, train_size=60000, samples_seen=60000,
        elapsed_s=3.0, evals=_evals([(0.0, 0.1), (1.0, 0.90), (2.0, 0.951), (3.0, 0.958)]), final_accuracy=0.9601,
    )


def _cnn_row() -> race.RaceRow:
    # 30,000 digits in 15.0 s: 2,000 digits/s; an epoch of 60,000 takes 30.0 s.
    return race.race_row(
        name="TinyVGG (10 channels)", params=CNN_PARAMS, macs_forward=CNN_MACS, train_size=60000,
        samples_seen=30000, elapsed_s=15.0,
        evals=_evals([(0.0, 0.1), (5.0, 0.94), (6.0, 0.955), (9.0, 0.972), (14.0, 0.981), (15.0, 0.983)]),
        final_accuracy=0.9835,
    )


def test_a_row_from_a_hand_made_history():
    fc, cnn = _fc_row(), _cnn_row()
    assert fc.samples_per_s == 20000 and fc.seconds_per_epoch == 3.0
    assert cnn.samples_per_s == 2000 and cnn.seconds_per_epoch == 30.0
    assert fc.macs_training == 3 * 12960 == 38880
    assert cnn.macs_training == 3 * 1133860
    assert fc.seconds_to == ((0.95, 2.0), (0.97, None), (0.98, None))
    assert cnn.seconds_to == ((0.95, 6.0), (0.97, 9.0), (0.98, 14.0))
    assert cnn.seconds_to_reach(0.97) == 9.0 and cnn.best_accuracy == 0.983
    with pytest.raises(KeyError):
        cnn.seconds_to_reach(0.5)
    empty = race.race_row(name="x", params=1, macs_forward=1, train_size=10, samples_seen=0, elapsed_s=0.0, evals=[])
    assert empty.samples_per_s is None and empty.seconds_per_epoch is None and empty.best_accuracy is None


def test_the_table_shows_every_column_as_text():
    t = race.table([_fc_row(), _cnn_row()])
    assert list(t) == [
        "network", "parameters", "multiply-adds per digit (forward)", "multiply-adds per digit (training step ≈ 3×)",
        "digits per second", "seconds per epoch", "seconds to 95%", "seconds to 97%", "seconds to 98%",
        "final test accuracy",
    ]
    assert t["parameters"] == ["13,002", "7,740"]
    assert t["multiply-adds per digit (forward)"] == ["12,960", "1,133,860"]
    assert t["multiply-adds per digit (training step ≈ 3×)"] == ["38,880", "3,401,580"]
    assert t["digits per second"] == ["20,000", "2,000"]
    assert t["seconds per epoch"] == ["3.0", "30.0"]
    assert t["seconds to 95%"] == ["2.0", "6.0"]
    assert t["seconds to 97%"] == ["not reached", "9.0"]
    assert t["final test accuracy"] == ["96.01%", "98.35%"]
    # A run with no point yet (a race not started) has reached nothing and missed nothing.
    empty = race.race_row(name="x", params=1, macs_forward=1, train_size=10, samples_seen=0, elapsed_s=0.0, evals=[])
    assert race.table([_fc_row(), empty])["seconds to 97%"] == ["not reached", "–"]
    still = race.race_row(name="x", params=1, macs_forward=1, train_size=10, samples_seen=5, elapsed_s=1.0,
                          evals=_evals([(0.5, 0.9)]), status=RunStatus.RUNNING.value)
    assert race.table([still])["seconds to 97%"] == ["not yet"]  # it may still get there


def test_explanation_fills_in_this_runs_numbers_and_finds_the_reversal():
    ex = race.explain(_fc_row(), _cnn_row())
    assert ex.macs_ratio == pytest.approx(1133860 / 12960)  # 87.5
    assert ex.params_ratio == pytest.approx(13002 / 7740)
    assert ex.speed_ratio == 10.0
    assert (ex.reversal.target, ex.reversal.cnn_seconds, ex.reversal.fc_seconds) == (0.97, 9.0, None)
    text = ex.text
    assert "7,740 weights, fewer than FCNet 784-16-16-10's 13,002" in text
    assert "1,133,860 multiply-adds per digit against 12,960: **87× more**" in text
    assert "20,000 digits per second and TinyVGG (10 channels) 2,000" in text
    assert "**10.0× slower** (30.0 s per epoch against 3.0 s)" in text
    assert "less than the 87× of the arithmetic" in text  # 10 < 87 / 2
    assert "FCNet 784-16-16-10 reached 95% first (2.0 s against 6.0 s)" in text
    assert "TinyVGG (10 channels) reached 97% first (9.0 s; FCNet 784-16-16-10: never, in this run)" in text


def test_explanation_when_one_network_leads_everywhere_or_neither_arrives():
    fc, cnn = _fc_row(), _cnn_row()
    slow_fc = race.race_row(name=fc.name, params=fc.params, macs_forward=fc.macs_forward, train_size=60000,
                            samples_seen=60000, elapsed_s=3.0, evals=_evals([(0.0, 0.1), (10.0, 0.96)]))
    ex = race.explain(slow_fc, cnn)
    # The explanation compares finer milestones than the table: from 80 % on, the CNN was first.
    assert [lead.target for lead in race.leads(slow_fc, cnn)] == list(race.MILESTONES)
    assert ex.reversal.target == 0.80 and "In this run it already has" in ex.text
    assert "reached 80% first (5.0 s; FCNet 784-16-16-10: 10.0 s)" in ex.text

    short_cnn = race.race_row(name=cnn.name, params=cnn.params, macs_forward=cnn.macs_forward, train_size=60000,
                              samples_seen=3000, elapsed_s=1.5, evals=_evals([(0.0, 0.1), (1.5, 0.5)]))
    ex = race.explain(fc, short_cnn)
    assert ex.reversal is None and "In this run FCNet 784-16-16-10 reached every target first" in ex.text
    assert "(95% after 2.0 s; TinyVGG (10 channels): never, in this run)" in ex.text

    early_fc = race.race_row(name=fc.name, params=fc.params, macs_forward=fc.macs_forward, train_size=60000,
                             samples_seen=600, elapsed_s=0.1, evals=_evals([(0.0, 0.1)]))
    ex = race.explain(early_fc, short_cnn)
    assert "Neither network reached 80% yet" in ex.text
    # Speeds close to the arithmetic ratio: no "fixed work" remark.
    near = race.race_row(name=fc.name, params=fc.params, macs_forward=fc.macs_forward, train_size=60000,
                         samples_seen=60000, elapsed_s=0.1, evals=[])
    assert "fixed work" not in race.explain(near, short_cnn).text  # 600,000 / 2,000 = 300x >= 87 / 2


def test_row_of_a_real_run_reads_its_progress():
    digits = data.synthetic_digits(84, seed=0)
    # 52 training digits: 4 are held out for validation, 48 are trained on.
    d = data.MNIST(train=data.DigitSet(digits.images[:52], digits.labels[:52]),
                   test=data.DigitSet(digits.images[52:], digits.labels[52:]))
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=2, batch_size=16), eval_every=1)
    run = runs.TrainingRun(spec, d)
    run.start()
    assert run.join(timeout=60)
    p = run.progress()
    row = race.row_of(p, targets=(0.5,))
    assert (row.name, row.params, row.macs_forward) == ("FCNet 784-16-16-10", 13002, 12960)
    assert row.samples_per_s == pytest.approx(96 / p.elapsed_s)
    assert row.seconds_per_epoch == pytest.approx(48 * p.elapsed_s / 96)
    assert row.seconds_to == ((0.5, race.seconds_to_reach(p.evals, 0.5)),)
    assert row.final_accuracy == p.final_test_accuracy and row.status == "finished"


# --- running a race ------------------------------------------------------------------------------


def test_a_sequential_race_trains_one_network_after_the_other_on_the_same_digits():
    train_config = TrainConfig(epochs=200, batch_size=1, seed=5)
    fc, cnn = race.race_specs(cnn=models.TinyVGGConfig(channels=2), train=train_config, train_size=64)
    assert fc.train == cnn.train and fc.train_size == cnn.train_size
    race_ = race.make_race(_data(), [fc, cnn], "one after the other")
    assert race_.status is RunStatus.IDLE
    race_.start()
    first, second = race_.runs
    _wait_until(lambda: first.progress().step >= 5)
    assert race_.status is RunStatus.RUNNING
    assert second.status is RunStatus.IDLE  # waits for its turn
    first.stop()  # the first run ends (as if finished): the second starts
    _wait_until(lambda: second.progress().step >= 3)
    assert first.status is RunStatus.STOPPED
    race_.stop()
    assert race_.join(timeout=30)
    assert race_.status is RunStatus.STOPPED and second.status is RunStatus.STOPPED
    assert [p.name for p in race_.progress()] == ["FCNet 784-16-16-10", "TinyVGG (2 channels)"]
    # Same seed, same digits: both saw the same batches in the same order, so the same evaluation steps.
    assert first.plan == second.plan


def test_a_race_run_together_trains_both_at_once_and_finishes():
    fc, cnn = race.race_specs(cnn=models.TinyVGGConfig(channels=2), train=TrainConfig(epochs=1, batch_size=16),
                              train_size=64)
    race_ = race.make_race(_data(), [fc, cnn], race.RaceMode.TOGETHER)
    race_.start()
    assert race_.join(timeout=60)
    assert race_.status is RunStatus.FINISHED
    assert [p.status for p in race_.progress()] == [RunStatus.FINISHED, RunStatus.FINISHED]
    assert [p.step for p in race_.progress()] == [4, 4]


def test_a_race_stopped_before_the_second_run_never_starts_it():
    fc, cnn = race.race_specs(train=TrainConfig(epochs=500, batch_size=1), train_size=64)
    race_ = race.make_race(_data(), [fc, cnn])
    race_.start()
    _wait_until(lambda: race_.runs[0].progress().step >= 2)
    race_.stop()
    assert race_.join(timeout=30)
    assert race_.runs[0].status is RunStatus.STOPPED
    assert race_.runs[1].status in (RunStatus.IDLE, RunStatus.STOPPED) and race_.runs[1].progress().step == 0
    assert not race_.runs[0].thread_alive and not race_.runs[1].thread_alive


def test_a_race_evaluates_on_a_fixed_cadence_whatever_an_evaluation_costs():
    # Under the recording budget a TinyVGG run's automatic cadence stretched to its first and last
    # points; a race's runs evaluate every total / RACE_EVAL_POINTS steps on RACE_EVAL_SIZE digits.
    fc, cnn = race.race_specs(cnn=models.TinyVGGConfig(channels=2), train=TrainConfig(epochs=1, batch_size=4),
                              train_size=640)
    race_ = race.make_race(_data(n_train=768), [fc, cnn], race.RaceMode.TOGETHER)  # 704 after validation
    for run in race_.runs:
        assert run.plan.total_steps == 160 and run.plan.eval_every == round(160 / config.RACE_EVAL_POINTS)
        assert not run.plan.adapt_eval and run.spec.eval_size == config.RACE_EVAL_SIZE
    race_.start()
    assert race_.join(timeout=120)
    for p in race_.progress():
        assert p.status is RunStatus.FINISHED
        # Step 0, every eval_every steps, and the last step: at least RACE_EVAL_POINTS points.
        assert len(p.evals) >= config.RACE_EVAL_POINTS
        assert p.eval_size == min(config.RACE_EVAL_SIZE, p.validation_size)


def test_a_race_keeps_a_cadence_its_spec_chose():
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=4), train_size=640, eval_every=7)
    assert race.race_cadence(spec, 10_000) is spec


def test_an_own_model_races_from_scratch_on_the_presets_digits_and_gets_a_plain_comparison():
    from digitrec import layers

    own = layers.parse("conv5x5(6,s=2,p=2) relu avgpool2 flatten linear(10)", name="mine: small")
    against = RunSpec(model=models.TinyVGGConfig(channels=4), train=TrainConfig(epochs=1, batch_size=32, seed=5),
                      train_size=300)
    mine, preset = race.own_model_specs(own, against)
    assert preset is against and mine.model is own
    assert (mine.train, mine.train_size, mine.eval_every, mine.eval_size) == (
        against.train, against.train_size, against.eval_every, against.eval_size)
    with pytest.raises(InvalidConfig, match="Cannot race mine: small"):
        race.own_model_specs(own, RunSpec(model=against.model, train=TrainConfig(batch_size=60_000)))

    # Not FCNet against TinyVGG: the comparison says only what these rows measured.
    a = race.race_row(name="mine: small", params=1000, macs_forward=50_000, train_size=60000, samples_seen=60000,
                      elapsed_s=6.0, evals=_evals([(0.0, 0.1), (1.0, 0.86), (4.0, 0.91)]))
    b = _cnn_row()  # reaches 80 % at 5.0 s, 90 % at 5.0 s (0.94), 95 % at 6.0 s
    assert race.explanation([a, b], [own, models.TinyVGGConfig()]) == race.compare(a, b)
    assert race.explanation([_fc_row(), b], [models.FCConfig(), models.TinyVGGConfig()]) == race.explain(_fc_row(), b).text
    text = race.compare(a, b)
    assert "mine: small has 1,000 weights and does 50,000 multiply-adds per digit; TinyVGG (10 channels) has 7,740" in text
    assert f"**{CNN_MACS / 50_000:,.1f}× less** arithmetic" in text
    assert "In this run mine: small trained 10,000 digits per second and TinyVGG (10 channels) 2,000." in text
    # The highest milestone either reached is 98 % (TinyVGG only); up to 90 % the own model led.
    assert "is 98%: TinyVGG (10 channels) got there first (14.0 s; mine: small: never, in this run)" in text
    assert "Earlier, at 90%, mine: small had led." in text  # 4.0 s against 5.0 s


def test_the_race_chart_labels_its_targets_once_on_the_full_axis_and_each_line_when_zoomed():
    from digitrec.viz.training import race_figure

    series = [("FCNet", _evals([(0.0, 0.1), (1.0, 0.96)]))]
    full = race_figure(series, targets=(0.95, 0.97, 0.98))
    # Three dotted lines a few pixels apart on 0-100 %: one label under them, not three piled on the 100 % tick.
    assert [a.text for a in full.layout.annotations] == ["targets 95 / 97 / 98 %"]
    assert sorted(s.y0 for s in full.layout.shapes) == [0.95, 0.97, 0.98]
    zoomed = race_figure(series, targets=(0.95, 0.97, 0.98), zoom=True)
    assert sorted(a.text for a in zoomed.layout.annotations) == ["95%", "97%", "98%"]
