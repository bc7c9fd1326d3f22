"""spec: a run's step plan, and parsing what a person typed into a RunSpec (every problem
in one sentence, before any training starts), including the memory budget."""

from __future__ import annotations

import pytest

from digitrec import config, models
from digitrec.errors import InvalidConfig
from digitrec.spec import RunSpec, make_spec, parse_widths, training_memory_bytes
from digitrec.train import TrainConfig


def test_plan_for_the_default_full_run_gives_about_thirty_test_points():
    spec = RunSpec(models.FCConfig(), TrainConfig(epochs=3, batch_size=128))
    plan = spec.plan(60000)
    # ceil(60000 / 128) = 469 steps per epoch; 1407 in all; 1407 / 30 = 46.9 -> every 47 steps.
    assert (plan.steps_per_epoch, plan.total_steps, plan.eval_every, plan.snapshot_every) == (469, 1407, 47, 47)
    points = 1 + 1407 // 47 + (1407 % 47 != 0)  # step 0, every 47th, and the last step
    assert 20 <= points <= 50
    assert plan.history_every == 1
    quick = RunSpec(models.FCConfig(), TrainConfig(epochs=1, batch_size=100), train_size=300).plan(60000)
    assert (quick.train_size, quick.total_steps, quick.eval_every) == (300, 3, 1)
    assert RunSpec(models.FCConfig(), TrainConfig(epochs=1, max_steps=300)).plan(60000).total_steps == 300


def test_make_spec_parses_typed_values():
    spec = make_spec(architecture="fcnet", widths="64, 32", lr="3e-3", batch_size="64", epochs=2, seed=7,
                          train_size=1000, optimizer="sgd", schedule="cosine")
    assert spec.model == models.FCConfig(hidden=(64, 32))
    assert spec.train == TrainConfig(epochs=2, batch_size=64, lr=0.003, optimizer="sgd", schedule="cosine", seed=7)
    assert spec.train_size == 1000 and spec.name == "FCNet 784-64-32-10"
    cnn = make_spec(architecture="tinyvgg", channels=6)
    assert cnn.model == models.TinyVGGConfig(channels=6) and cnn.train == TrainConfig()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"lr": "abc"}, "the learning rate must be a number like 0.001 or 1e-3 (got 'abc')"),
        ({"lr": "0"}, "learning rate must be above 0"),
        ({"lr": "50"}, "learning rate must be above 0 and at most 10 (got 50.0)"),
        ({"widths": "16, x"}, "hidden widths must be whole numbers separated by commas, like 16, 16 (got '16, x')"),
        ({"widths": "0, 16"}, "hidden widths must be one to 8 whole numbers from 1 to 4096"),
        ({"epochs": 21}, "epochs must be from 1 to 20 (got 21)"),
        ({"batch_size": 0}, "batch size must be from 1 to 60,000 (got 0)"),
        ({"batch_size": 2.5}, "batch size must be a whole number (got 2.5)"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, momentum, adam"),
        ({"architecture": "resnet"}, "the network must be fcnet or tinyvgg"),
        ({"snapshot_every": 1, "batch_size": 1, "train_size": 60000},
         "a snapshot every 1 steps makes 180000 snapshots"),
    ],
)
def test_make_spec_refuses_invalid_values_with_a_sentence(kwargs, words):
    with pytest.raises(InvalidConfig) as info:
        make_spec(**kwargs)
    message = str(info.value)
    assert message.startswith("Cannot train: ") and message.endswith(".")
    assert words in message
    assert "Cannot train" not in message[len("Cannot train: "):]  # one sentence, not nested ones


def test_make_spec_lists_every_problem_at_once():
    with pytest.raises(InvalidConfig) as info:
        make_spec(widths="", lr="fast", epochs=0)
    message = str(info.value)
    assert "hidden widths" in message and "learning rate" in message and "epochs" in message


def test_a_batch_too_big_for_memory_is_refused_before_a_run_exists():
    small = training_memory_bytes(models.TinyVGGConfig(), 128)
    # 128 digits x every layer's output (101 maps of 28x28 / 14x14 / 7x7 + 490 + 10 floats) x 4 bytes x 3
    per_digit = 10 * (28 * 28 * 4 + 14 * 14 * 5 + 7 * 7) + 490 + 10
    params = models.count_params(models.build(models.TinyVGGConfig()))
    # ... plus the weights, gradients, Adam's moments and temporaries, and a fixed part
    assert small == 128 * per_digit * 4 * 3 + params * 28 + 256 * 2**20
    assert training_memory_bytes(models.TinyVGGConfig(), 60000) > config.MEMORY_BUDGET_BYTES
    with pytest.raises(InvalidConfig, match="use a smaller batch size"):
        make_spec(architecture="tinyvgg", channels=10, batch_size=60000)
    make_spec(architecture="fcnet", widths="16, 16", batch_size=60000)  # a small network may use a huge batch


def test_the_estimate_counts_weights_gradients_and_optimizer_state():
    # 8 hidden layers of 4096 (120 M parameters): the activations of a batch are ~100 MB, but the
    # weights, their gradients and Adam's two moments alone are 1.9 GB; training used 2.5 GB.
    wide = models.FCConfig(hidden=(4096,) * 8)
    params = models.count_params(models.build(wide))
    assert training_memory_bytes(wide, 128) >= params * 4 * 4
    assert training_memory_bytes(wide, 128) > config.MEMORY_BUDGET_BYTES
    assert training_memory_bytes(wide, 128, "sgd") < training_memory_bytes(wide, 128, "adam")
    with pytest.raises(InvalidConfig, match="GiB of memory"):
        make_spec(architecture="fcnet", widths=",".join(["4096"] * 8), batch_size=128)


def test_the_estimate_is_above_what_training_really_takes():
    # Two Adam steps of a 784-1024-1024-1024-10 FCNet in a fresh process: its peak memory
    # (resident, above the process after its imports; Linux's VmHWM) must not exceed the estimate.
    import subprocess
    import sys

    probe = (
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from digitrec import models\n"
        "def status(key):\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith(key))\n"
        "    return int(line.split()[1]) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # restart the peak (VmHWM) from here\n"
        "base = status('VmRSS')\n"
        "m = models.build(models.FCConfig(hidden=(1024, 1024, 1024)), seed=0)\n"
        "opt = torch.optim.Adam(m.parameters(), 1e-3)\n"
        "x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))\n"
        "for _ in range(2):\n"
        "    opt.zero_grad(); torch.nn.functional.cross_entropy(m(x), y).backward(); opt.step()\n"
        "print(status('VmHWM') - base)\n"
    )
    used = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                              timeout=120).stdout.split()[-1])
    estimate = training_memory_bytes(models.FCConfig(hidden=(1024, 1024, 1024)), 128)
    print(f"\nmeasured {used / 2**20:.0f} MiB, estimated {estimate / 2**20:.0f} MiB")
    assert used <= estimate, (used, estimate)
    assert estimate < 3 * used  # an estimate, not a wild overstatement


def test_make_spec_defaults_are_the_config_defaults_and_max_steps_goes_into_the_train_config():
    spec = make_spec()
    assert spec.model == models.FCConfig(hidden=config.FC_HIDDEN) and spec.train_size == config.TRAIN_DIGITS
    assert (spec.train.epochs, spec.train.batch_size, spec.train.lr, spec.train.optimizer, spec.train.schedule,
            spec.train.seed) == (config.EPOCHS, config.BATCH_SIZE, config.LR, config.OPTIMIZER, config.SCHEDULE,
                                 config.SEED)
    lesson = make_spec(max_steps=300, epochs=1)
    assert lesson.train.max_steps == 300 and lesson.plan(config.TRAIN_DIGITS).total_steps == 300
    with pytest.raises(InvalidConfig, match="the number of steps must be from 1 to 100,000"):
        make_spec(max_steps=0)


def test_parse_widths_reads_text_and_sequences():
    assert parse_widths("16, 16") == parse_widths("16;16") == parse_widths((16, 16)) == (16, 16)
    with pytest.raises(InvalidConfig, match="whole numbers separated by commas"):
        parse_widths("sixteen")
    with pytest.raises(InvalidConfig, match="must be whole numbers"):
        parse_widths([16.5])
