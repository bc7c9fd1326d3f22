"""Reading a file a person named: regular files only, never more than a cap.

``Path.read_bytes`` on ``/dev/zero`` reads until memory runs out, and on a
named pipe it waits for a writer forever. A checkpoint or an image is always a
regular file of bounded size, so anything else is refused, with a sentence
that says what the path is, before it is opened.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from digitrec.errors import DigitrecError


def kind_of(mode: int) -> str:
    """What a stat mode is, in words ("a folder", "a device", ...)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    if stat.S_ISFIFO(mode):
        return "a named pipe, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    return "not a regular file"


def read_regular_file(
    path: str | os.PathLike, max_bytes: int, what: str, error: type[DigitrecError] = DigitrecError
) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    ``what`` names the expected content in messages ("a checkpoint", "an image").
    Raises FileNotFoundError when nothing is there, ``error`` (a DigitrecError) otherwise.
    """
    path = Path(path)
    try:
        st = path.stat()  # follows symlinks; never opens, so a pipe cannot block us
    except FileNotFoundError:
        raise
    except OSError as e:
        raise error(f"{path} could not be read: {e.strerror or e}. Check the path and its permissions.") from e
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is {kind_of(st.st_mode)}. Give the path of {what} file.")
    if st.st_size > max_bytes:
        raise error(
            f"{path} is {st.st_size:,} bytes, more than {what} can be (at most {max_bytes:,}). "
            f"Give the path of {what} file."
        )
    # O_NONBLOCK: should the path have become a pipe since the stat, open still returns at once.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes + 1)  # a file that grew since the stat is still cut off
    except OSError as e:
        raise error(f"{path} could not be read: {e.strerror or e}. Check its permissions.") from e
    if len(data) > max_bytes:
        raise error(f"{path} is larger than {what} can be (at most {max_bytes:,} bytes).")
    return data
