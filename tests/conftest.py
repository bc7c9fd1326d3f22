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
def no_mnist(monkeypatch, tmp_path):
    """No MNIST anywhere, for the app: an empty data folder, no mirror, no network. The app's loaded copy
    is dropped before the test and again after it, so the next test loads the real data again."""
    from streamlit_app import state

    monkeypatch.setenv("DIGITREC_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(data, "REPO_ROOT", tmp_path / "repo")  # hides ../shared/data/mnist
    monkeypatch.setattr(data, "_try_download", lambda root: False)
    state._mnist.clear()
    yield
    state._mnist.clear()


@pytest.fixture
def fcnet() -> torch.nn.Module:
    return models.build(models.FCConfig(), seed=0)


@pytest.fixture
def tinyvgg() -> torch.nn.Module:
    return models.build(models.TinyVGGConfig(), seed=0)
