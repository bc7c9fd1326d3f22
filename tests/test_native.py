"""digitrec.native: every C kernel is listed, and load_all builds each one (what a spare worker does while it waits)."""

from __future__ import annotations

import pytest

from digitrec import config, native
from tests.native_kernels import compiler


@pytest.fixture
def fresh_loads():
    """``native.load`` forgets what it loaded, before the test and after it (the next use loads anew)."""
    native.load.cache_clear()
    yield
    native.load.cache_clear()


def test_every_kernel_source_is_listed():
    assert set(native.KERNELS) == {p.stem for p in native.SOURCES.glob("*.c")}


def test_load_all_builds_every_kernel_into_an_empty_cache(fresh_loads, monkeypatch, tmp_path):
    if compiler() is None:
        pytest.skip("no C compiler on this machine: training uses PyTorch's own operations")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert native.load_all() == []
    built = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "digitrec").glob("*.so"))
    assert built == sorted(native.KERNELS)


def test_load_all_names_the_kernels_it_could_not_have(fresh_loads, monkeypatch):
    monkeypatch.setenv(config.NATIVE_ENV, "0")
    assert native.load_all() == list(native.KERNELS)
