"""Compiles and loads digitrec's C kernels (``digitrec/<name>.c``), once per machine.

Today there are three, for training, where PyTorch's CPU kernels are slow on this project's small
tensors: ``pooling.c``, max pooling over few channels (see digitrec.pooling),
``image_conv.c``, the convolution of the one-channel image (see digitrec.image_conv), and
``digit_batch.c``, a batch gathered from the digits in memory (see digitrec.digit_batch). A kernel is compiled on
first use by the machine's C compiler (``$CC``, else ``cc``: the machines this project is
built and tested on have GCC; elsewhere Debian's build-essential or Xcode's command-line
tools give one) with ``-O3 -march=native``, into the user's cache
(``$XDG_CACHE_HOME/digitrec``, else ``~/.cache/digitrec``; where that cannot be written, the
temporary folder), under a name made from a hash of
its source, the flags and this processor, so that a changed source or a cache copied from
another machine is never loaded. It takes about 0.3 s, once per machine; the app's spare worker builds
every kernel while it waits for a run (``load_all``), so a run that takes it does not (a run that found no
spare waiting opens a worker of its own, which builds the kernels it uses as before).

Nothing depends on it: without a compiler, where compiling fails, or with
``DIGITREC_NATIVE=0``, ``load`` returns None, says why once in the log, and every caller
keeps PyTorch's own operation (slower; the same numbers, or for the convolution the same
to rounding).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import stat
import subprocess
import tempfile
from pathlib import Path

import torch

from digitrec import config

log = logging.getLogger(__name__)

SOURCES = Path(__file__).parent
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11")
COMPILE_TIMEOUT_S = 120


# Every kernel, by its source's name (digitrec/<name>.c).
KERNELS = ("pooling", "image_conv", "digit_batch")

# The element types the kernels are written for, by the suffix of their entry points' names
# (pool_forward_bfloat16, conv_backward_float32, ...).
KERNEL_TYPES = {torch.bfloat16: "bfloat16", torch.float32: "float32"}


def address(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    """The pointer a kernel takes for ``tensor`` (NULL for None). The caller keeps the tensor alive
    until the call returns: a temporary freed before it would leave the kernel a dangling pointer."""
    return ctypes.c_void_p(None if tensor is None else tensor.data_ptr())


def enabled() -> bool:
    """Does this process use the C kernels (``DIGITREC_NATIVE`` is not "0")?"""
    return os.environ.get(config.NATIVE_ENV, "1").strip() != "0"


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled ``digitrec/<name>.c``, compiling it first if this machine has not; None (and the
    reason in the log, once) where it cannot be had."""
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(_compiled(SOURCES / f"{name}.c")))
    except (OSError, subprocess.SubprocessError, ValueError) as exc:  # ValueError: a malformed $CC, odd output
        log.warning("digitrec: the C kernel %s could not be built (%s); PyTorch's own operation is used "
                    "instead (slower, the same numbers).", name, exc)
        return None


def load_all() -> list[str]:
    """Build (where this machine has not yet) and load every kernel; the names of those that could not be
    had. A spare worker calls it while it waits for a run, so that the run it is handed does not wait on the
    compiler (about 0.3 s a kernel) in its first batches."""
    return [name for name in KERNELS if load(name) is None]


def _compiled(source: Path, flags: tuple[str, ...] = FLAGS) -> Path:
    """The shared library of ``source`` compiled with ``flags`` (the tests compile for other processors)."""
    compiler = shlex.split(os.environ.get("CC", "").strip() or "cc")
    text = source.read_bytes()
    digest = hashlib.sha256(b"\0".join([text, " ".join(compiler + list(flags)).encode(), _processor()]))
    cache = _cache_dir()
    library = cache / f"{source.stem}-{digest.hexdigest()[:16]}.so"
    if library.exists():
        return library
    # Compiled under a name of its own, then renamed: two worker processes compiling at once
    # each load a whole library, never the other's half-written one.
    handle, partial = tempfile.mkstemp(dir=cache, prefix=f".{source.stem}-", suffix=".so")
    os.close(handle)
    try:
        done = subprocess.run([*compiler, *flags, "-o", partial, str(source)], capture_output=True, text=True,
                              timeout=COMPILE_TIMEOUT_S)
        if done.returncode != 0:
            raise OSError(f"{' '.join(compiler)} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def _cache_dir() -> Path:
    """The user's cache folder where it can be written (made if need be), else this user's own folder
    in the temporary one (a server account whose home is read-only).

    A library is only ever loaded from the folder it would be written to, and the temporary one
    only if this user owns it and nobody else may write there: in a shared /tmp another account
    could otherwise make that folder first and put its own library under the name looked for."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    mine = Path(base) / "digitrec"
    try:
        mine.mkdir(parents=True, exist_ok=True)
        if os.access(mine, os.W_OK):
            return mine
    except OSError:
        pass
    private = Path(tempfile.gettempdir()) / f"digitrec-{os.getuid()}"
    try:
        private.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = private.lstat()  # not followed: a link planted there is refused
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise OSError(f"{mine} cannot be written, and {private} is not a folder of this user's alone")
    return private


def _processor() -> bytes:
    """What ``-march=native`` compiles for: the instruction set flags of this processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86, Arm
                return line.encode()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".encode()
