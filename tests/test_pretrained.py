"""The committed weights load and reach their accuracy targets on the real test set."""

import pytest

from digitrec import checkpoints, train


@pytest.mark.parametrize("key, target", [("fc", 0.950), ("cnn", 0.988)])
def test_pretrained_weights_reach_their_target_on_the_10000_test_digits(mnist, key, target):
    ck = checkpoints.load_pretrained(key)
    _, accuracy = train.evaluate(ck.model, mnist.test)
    assert accuracy >= target
    # The accuracy stored in the file is the one the model really has (within one digit:
    # training measured it in channels-last memory, which rounds a little differently).
    assert ck.info.test_accuracy == pytest.approx(accuracy, abs=1.5e-4)


def test_pretrained_configs_are_the_lesson_defaults():
    assert checkpoints.load_pretrained("fc").config.hidden == (16, 16)
    assert checkpoints.load_pretrained("cnn").config.channels == 10
