"""Atomic file writes: a failed write leaves nothing at the destination, and an existing
file there stays as it was until the new one is complete. JSON reads whose errors name the
file and the problem."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable


def write_atomically(path: str, write: Callable[[str], object], *, suffix: str = "") -> str:
    """Call ``write(tmp)`` on a temporary file beside ``path`` (same folder, so the rename is
    atomic), give it the usual permissions (``mkstemp`` creates 0600) and rename it over
    ``path``; returns ``path``. On any failure the temporary file is removed and the error
    re-raised. ``suffix`` is the temporary file's ending (writers such as nibabel choose the
    format by it)."""
    path = str(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_json(path: str, *, missing: str | None = None):
    """The JSON document at ``path``. A missing file raises ``FileNotFoundError`` saying
    ``f"{path}: {missing}"`` (what the caller expected the file to be), a file that is not
    valid JSON (truncated, overwritten) ``ValueError`` naming the path, line and column."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        if missing is None:
            raise
        raise FileNotFoundError(f"{path}: {missing}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
