"""Atomic writes: a file or directory appears complete at its path, or not at all.

Every writer in the project goes through these two helpers, so a crash or a
failed step never leaves a half-written checkpoint, IR, ONNX or JSON file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything below it the user's usual modes.

    ``mkstemp``/``mkdtemp`` create private (0600/0700) entries; a finished
    output should look like any file the user writes (0666/0777 & ~umask).
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_file_atomically(path: str | Path, write: Callable[[Path], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    Args:
        path: The file to create or replace.
        write: Writes the content to the path it is given.
        suffix: The temporary file's suffix (``np.savez`` appends ``.npz`` to any other).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
