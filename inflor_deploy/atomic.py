"""Atomic writes: a file or directory appears complete at its path, or not at all.

Every writer in the project goes through these two helpers, so a crash or a
failed step never leaves a half-written checkpoint, IR, ONNX or JSON file.
An ``OSError`` while writing (a full disk, a read-only file system) becomes
an :class:`~inflor_deploy.outputs.OutputError` naming the path and the fix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from inflor_deploy.outputs import output_error, rename_into_place, sibling_name


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything below it the user's usual modes.

    ``mkstemp``/``mkdtemp`` create private (0600/0700) entries; a finished
    output should look like any file the user writes (0666/0777 & ~umask).
    """
    umask = os.umask(0)
    os.umask(umask)
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def write_file_atomically(path: str | Path, write: Callable[[Path], None], suffix: str = ".tmp",
                          replace: bool = True) -> Path:  # fmt: skip
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    Args:
        path: The file to create or replace.
        write: Writes the content to the path it is given.
        suffix: The temporary file's suffix (``np.savez`` appends ``.npz`` to any other).
        replace: Replace an existing ``path`` (atomically); False refuses one
            that appeared meanwhile (``RENAME_NOREPLACE``: a ``FileExistsError``,
            and the temporary file is removed).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=sibling_name(path, ""), suffix=suffix)
    except OSError as err:
        raise output_error(err, path) from err
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        apply_umask(tmp)
        if replace:
            os.replace(tmp, path)
        else:
            rename_into_place(tmp, path, replace=False)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise output_error(err, path) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
