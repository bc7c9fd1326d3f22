"""Small helpers shared by the training tests (runs, race, train): synthetic data and waiting."""

from __future__ import annotations

import time

from digitrec import data


def digits(n: int, offset: int = 0) -> data.DigitSet:
    """n synthetic digits of one family (same class prototypes), from position ``offset``."""
    full = data.synthetic_digits(n + offset, seed=0)
    return data.DigitSet(full.images[offset:], full.labels[offset:])


def small_mnist(n_train: int = 64, n_test: int = 120) -> data.MNIST:
    """A tiny MNIST-shaped dataset of synthetic digits (test digits are different ones of the same family)."""
    return data.MNIST(train=digits(n_train), test=digits(n_test, offset=n_train))


def wait_until(predicate, timeout: float = 30.0) -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
