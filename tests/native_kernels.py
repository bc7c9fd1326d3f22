"""What the tests of digitrec's C kernels (pooling.c, image_conv.c, digit_batch.c) share: whether this machine can
build them, and builds of them for other processors' vector widths."""

from __future__ import annotations

import ctypes
import os
import platform
import shlex
import shutil

import pytest

from digitrec import native


def compiler() -> str | None:
    """The C compiler digitrec.native would run, if this machine has it."""
    return shutil.which(shlex.split(os.environ.get("CC", "").strip() or "cc")[0])


def require_kernel(name: str, instead: str) -> None:
    """``<name>.c`` compiled. Only a machine without a C compiler goes without (training then keeps
    PyTorch's ``instead``, which the tests of the other paths cover); one that has a compiler must build it."""
    if compiler() is None:
        pytest.skip(f"no C compiler on this machine: training uses PyTorch's {instead}")
    assert native.load(name) is not None, f"{name}.c did not compile: see the log"


def _processor_has(flag: str) -> bool:
    try:
        return any(line.startswith("flags") and flag in line.split() for line in open("/proc/cpuinfo"))
    except OSError:
        return False


# A kernel takes its vector width from the processor it is compiled for (64 bytes with AVX-512, 32
# with AVX2, 16 otherwise), and the machine that runs the tests picks one: the others are compiled
# for older x86 processors this one can also run (-mavx2 -mfma, not -march=haswell, whose other
# instructions a VM may hide).
OTHER_WIDTHS = [pytest.param(march, marks=pytest.mark.skipif(
                    platform.machine() != "x86_64" or not all(_processor_has(flag) for flag in needs),
                    reason=f"this processor cannot run code for -march={march}"))
                for march, needs in (("x86-64", ("sse2",)), ("x86-64 -mavx2 -mfma", ("avx2", "fma")))]


def built_for(name: str, march: str) -> ctypes.CDLL:
    """``<name>.c`` compiled with ``-march=<march>`` in place of ``-march=native`` (into the cache
    $XDG_CACHE_HOME names: a test points it at its own folder first)."""
    flags = tuple(part for flag in native.FLAGS
                  for part in (f"-march={march}".split() if flag == "-march=native" else [flag]))
    return ctypes.CDLL(str(native._compiled(native.SOURCES / f"{name}.c", flags)))
