"""Shared fixtures. Real MNIST comes through the project's own offline-mirror
path (../shared/data/mnist); tests that need it fail, never skip, when it is
missing, because CI always has it."""

from __future__ import annotations

import functools

import pytest
import torch

from digitrec import data, models

torch.set_num_threads(2)


@functools.lru_cache(maxsize=1)
def _mnist() -> data.MNIST:
    return data.load_mnist(download=False)


@pytest.fixture(scope="session")
def mnist() -> data.MNIST:
    """Real MNIST, both splits, loaded once per test session."""
    return _mnist()


@pytest.fixture
def fcnet() -> torch.nn.Module:
    return models.build(models.FCConfig(), seed=0)


@pytest.fixture
def tinyvgg() -> torch.nn.Module:
    return models.build(models.TinyVGGConfig(), seed=0)
