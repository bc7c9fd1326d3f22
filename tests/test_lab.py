"""lab: the lab's experiments, run for real, support the answers their lessons reveal; their
numbers fill lessons 08 and 13; a lab run's curves watch validation digits and refuse bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from digitrec import config, data, lab, lessons, models, train
from digitrec.errors import InvalidConfig
from digitrec.runs import RunStatus, TrainingRun
from digitrec.spec import make_spec
from tests.helpers import small_mnist

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


@pytest.fixture(scope="module")
def results(mnist):
    """Every experiment, measured once (TinyVGG's take most of the time)."""
    return {key: lab.run_experiment(key, mnist) for key in lab.EXPERIMENTS}


@pytest.mark.parametrize("key", list(lab.EXPERIMENTS))
def test_each_experiment_supports_the_answer_its_lesson_reveals(results, key):
    experiment = lab.EXPERIMENTS[key]
    assert experiment.answer in experiment.choices
    assert lab.verdict(key, results[key]) == experiment.answer
    for r in results[key].values():
        assert 0 <= r.test_accuracy <= 1 and r.steps == experiment.values(r.label)["max_steps"] or r.diverged


def test_the_numbers_the_issue_gave_for_orientation_hold(results):
    """Plain SGD, FCNet 16-16, 300 steps of 64: the learning-rate sweep, overfitting, shuffled pixels."""
    sweep = {label: r.test_accuracy for label, r in results["learning-rate"].items()}
    assert sweep["lr 0.3"] > sweep["lr 0.1"] > 0.8 and sweep["lr 1"] < 0.6 and sweep["lr 3"] < 0.2
    small = results["training-size"]["300 digits"]
    assert small.train_digits == 300 and small.train_accuracy > 0.98 and small.validation_accuracy < 0.85
    full = results["training-size"]["all training digits"]
    assert full.train_digits == config.TRAIN_DIGITS - config.VALIDATION_SIZE
    assert abs(full.train_accuracy - full.validation_accuracy) < 0.03
    shuffled = results["shuffled-pixels"]
    assert abs(shuffled["FCNet"].test_accuracy - shuffled["FCNet, shuffled"].test_accuracy) < 0.02
    assert shuffled["TinyVGG"].test_accuracy - shuffled["TinyVGG, shuffled"].test_accuracy > 0.05
    # Augmentation flattens TinyVGG's shift curve: far better 4 px out, about the same unmoved.
    plain, augmented = results["augmentation"]["TinyVGG"], results["augmentation"]["TinyVGG + augmentation"]
    assert lab.mean_far_shift(augmented) > lab.mean_far_shift(plain) + 0.1
    centre = lab.SHIFTS.index(0)
    assert abs(augmented.shift_accuracy[centre] - plain.shift_accuracy[centre]) < 0.03


def test_lab_facts_fill_every_placeholder_of_lessons_08_and_13(mnist, results):
    from digitrec import checkpoints

    pretrained = {k: checkpoints.load_pretrained(k) for k in ("fc", "cnn")}
    facts = lessons.lab_facts(mnist, pretrained)
    assert all(name.startswith(lessons.LAB_PREFIX) for name in facts)
    # The facts are the measured results, not typed numbers.
    assert facts["lab.small.train"] == f"{results['training-size']['300 digits'].train_accuracy:.1%}"
    assert facts["lab.lr_best"] == lab.EXPERIMENTS["learning-rate"].answer
    assert facts["lab.lr_0_3.test"] == f"{results['learning-rate']['lr 0.3'].test_accuracy:.1%}"
    assert float(facts["lab.relu.test"].rstrip("%")) > float(facts["lab.linear.test"].rstrip("%"))
    assert float(facts["lab.shift.cnn.far"].rstrip("%")) > float(facts["lab.shift.fc.far"].rstrip("%"))
    assert facts["lab.weights.cnn.shift"] == "2" and facts["lab.validation_size"] == "5,000"
    from digitrec import samples

    nets = {k: ck.model for k, ck in pretrained.items()}
    digit = lessons.digit_facts(nets, samples.sample_digit(7).reshape(1, 1, 28, 28), 7)  # the questions on your digit
    for name in ("08-does-it-generalise.md", "13-augmentation.md"):
        lesson = lessons.parse_lesson((LESSONS / name).read_text(encoding="utf-8"), name)
        for step in lesson.steps:
            for block in step.blocks:
                texts = [block.text]
                for q in (block.question, getattr(block, "prediction", None)):
                    if q is not None and hasattr(q, "answers"):
                        texts += [q.prompt] + [a.text + a.feedback for a in q.answers]
                for text in texts:
                    filled = lessons.fill(text, {**digit, **facts, **lessons.own_model_facts()})  # LessonError if unknown
                    assert "{{" not in filled
                if block.widget is not None and block.widget.name == "training_lab":
                    assert block.widget.params["experiment"] in lab.EXPERIMENTS


# --- a lab run: validation curves, the test set once, bad settings refused ---------------------------


def test_a_lab_run_refuses_out_of_range_settings_with_one_sentence_before_it_starts():
    cases = [
        (dict(augment_shift=9), "the augmentation shift (pixels) must be from 0 to 4 (got 9)"),
        (dict(augment_rotation="45"), "the augmentation rotation (degrees) must be from 0 to 30 (got 45)"),
        (dict(augment_rotation="lots"), "the augmentation rotation (degrees) must be a number (got 'lots')"),
        (dict(train_size=100), "training digits must be from 300 to 60,000 (got 100)"),
        (dict(train_size=70000), "training digits must be from 300 to 60,000 (got 70,000)"),
        (dict(activation="tanh"), "the activation must be one of relu, none (got 'tanh')"),
        (dict(optimizer="rmsprop"), "optimizer must be one of sgd, momentum, adam"),
        (dict(max_steps=0), "the number of steps must be from 1 to 100,000 (got 0)"),
        (dict(shuffle_pixels="yes"), "shuffle the pixels must be on or off"),
    ]
    for kwargs, words in cases:
        with pytest.raises(InvalidConfig) as info:
            make_spec(**kwargs)
        message = str(info.value)
        assert message.startswith("Cannot train: ") and message.endswith(".") and words in message, message
    # All at once, in one sentence.
    with pytest.raises(InvalidConfig) as info:
        make_spec(augment_shift=9, train_size=100, lr="fast")
    assert str(info.value).count("Cannot train") == 1 and "augmentation shift" in str(info.value)
    spec = make_spec(optimizer="sgd", lr="0.3", activation="none", augment_shift=2, augment_rotation="10",
                     shuffle_pixels=True, train_size=300)
    assert spec.model == models.FCConfig(activation="none") and spec.train.optimizer == "sgd"
    assert (spec.train.augment_shift, spec.train.augment_rotation, spec.train.shuffle_pixels) == (2, 10.0, True)


def test_a_shuffled_pixel_run_reads_validation_test_and_probe_in_the_same_order():
    d = small_mnist(n_train=104, n_test=40)
    spec = make_spec(optimizer="sgd", lr=0.1, batch_size=16, epochs=2, train_size=300, shuffle_pixels=True)
    run = TrainingRun(spec, d, probe=d.test.images[0].float() / 255)
    run.start()
    assert run.join(timeout=60)
    p = run.progress()
    assert p.status is RunStatus.FINISHED and p.shuffled_pixels
    model, order = run.trained_model(), data.pixel_permutation()
    kept, held = data.validation_split(d.train)
    assert p.evals[-1].val_loss == pytest.approx(train.evaluate(model, held, order=order)[0])
    assert p.evals[-1].val_loss != pytest.approx(train.evaluate(model, held)[0])
    assert p.final_test_accuracy == pytest.approx(train.evaluate(model, d.test, order=order)[1])
    probe = data.permute_pixels(d.test.images[:1].float() / 255, order).unsqueeze(1)
    with torch.no_grad():
        torch.testing.assert_close(p.probe_probs, torch.softmax(model(probe), dim=1)[0])


def test_the_pages_lab_runs_evaluate_on_the_races_fixed_cadence():
    """The lab's runs are a few hundred steps: the recording budget would leave their curves two points,
    so each variant evaluates on a fixed cadence (about RACE_EVAL_POINTS points), as a race's runs do."""
    from digitrec import config

    for experiment in lab.EXPERIMENTS.values():
        for label in experiment.variants:
            values = experiment.values(label)
            spec = lab.run_spec(values)
            plan = spec.plan(min(int(values["train_size"]), config.TRAIN_DIGITS - config.VALIDATION_SIZE))
            assert not plan.adapt_eval and spec.eval_size == config.RACE_EVAL_SIZE, (experiment, label)
            points = plan.total_steps // plan.eval_every
            assert config.RACE_EVAL_POINTS // 2 <= points <= 2 * config.RACE_EVAL_POINTS, (experiment, label, points)
