"""Where outputs go: checked before the work, locked against a second writer, and failures a person can act on.

* :func:`check_output_path` runs before a compile or a training run: the
  path's length (``NAME_MAX`` per component, ``PATH_MAX`` with room for the
  files written inside), a writable nearest existing directory (tried by
  creating and removing an entry, so read-only mounts, ACLs and root are
  all judged the way the write will be), and free space against an
  estimate. Without it a read-only directory or a 250-character name failed
  with a traceback, and only after the whole compile.
* :func:`output_lock` is an advisory ``flock`` on a small file beside the
  output (``.NAME.lock``): a second compile to the same place fails at once
  and names the first (its pid, command line and start time, written into
  the lock file). The kernel drops the lock when its holder dies, so a
  killed compile never blocks the next one. Locks are re-entrant within a
  process (a compile locks, then writes its artifact).
* :func:`reserve_file` does both for a single-file output (``export``'s
  file): checked before the work, refused if it exists (without
  ``--force``), locked while the work runs.
* :func:`rename_into_place` moves a finished directory to its path without
  replacing anything (``renameat2(RENAME_NOREPLACE)``) or, when replacing,
  swaps old and new in one step (``RENAME_EXCHANGE``), so a reader sees the
  old output or the new one, never none. Where the kernel or file system
  lacks ``renameat2`` it falls back to ``rename`` under the lock.
* :func:`output_error` turns an ``OSError`` met while writing (no space, a
  quota, a read-only file system, permissions, a name too long) into an
  :class:`OutputError` that names the path, the cause and the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from inflor_deploy.errors import InflorError

__all__ = [
    "INNER_PATH_RESERVE",
    "OutputError",
    "artifact_bytes_per_checkpoint_byte",
    "check_output_path",
    "estimate_artifact_bytes",
    "nearest_existing_dir",
    "output_error",
    "output_lock",
    "rename_into_place",
    "reserve_file",
    "sibling_name",
]

#: Characters reserved beyond the output path for what is written inside it
#: (``ir/NN_<pass>.npz``, ``report/report.html``, temporary ``.NAME.XXXXXXXX.tmp`` files).
INNER_PATH_RESERVE = 64
#: Bytes per checkpoint byte of each file an artifact holds, measured on digits_cnn (its folded pooling
#: widens fc1) and resnet20, with a margin: each float IR step 0.88-1.10x, each fixed-point IR step
#: 0.28-0.47x, the float ONNX 0.99-1.02x, the integer ONNX (int64 weights) 2.5-3.6x.
FLOAT_STEP_BYTES_PER_CHECKPOINT_BYTE = 1.15
FIXED_STEP_BYTES_PER_CHECKPOINT_BYTE = 0.5
ONNX_BYTES_PER_CHECKPOINT_BYTE = 1.05 + 3.7
#: Plus manifest, JSON reports and file-system slack.
ARTIFACT_OVERHEAD_BYTES = 1 << 20
_LONG_NAME = 100  # sibling names (staging, lock) keep at most this much of the output's name


class OutputError(InflorError):
    """An output cannot be written where it was asked for; the message says why and what to do."""


# --------------------------------------------------------------------------- errors


_FIXES = {
    errno.ENOSPC: "the file system is full: free space there or choose another output directory",
    errno.EDQUOT: "your disk quota is exhausted: free space or choose another output directory",
    errno.EROFS: "the file system is read-only: choose an output directory on a writable one",
    errno.EACCES: "permission denied: choose an output directory you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: choose an output directory you can write, or fix its permissions",
    errno.ENAMETOOLONG: "the name is too long for the file system: choose a shorter output path",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another output path",
}


def output_error(err: OSError, path: str | Path, doing: str = "write") -> OutputError:
    """An :class:`OutputError` for an ``OSError`` met while writing ``path`` (what happened, and the fix)."""
    reason = err.strerror or str(err)
    fix = _FIXES.get(err.errno, "check the path and try again")
    return OutputError(f"cannot {doing} {path}: {reason} ({fix}); nothing was written")


# --------------------------------------------------------------------------- checks before the work


def nearest_existing_dir(path: Path) -> Path:
    """The closest existing ancestor of ``path`` (``path`` itself if it exists)."""
    probe = Path(os.path.abspath(path))
    while not os.path.exists(probe) and probe != probe.parent:  # os.path: False (not an error) on a too-long name
        probe = probe.parent
    return probe


def sibling_name(path: Path, kind: str) -> str:
    """A hidden name next to ``path`` for its staging copy, lock or retired copy; never longer than ~130 characters."""
    name = path.name
    if len(name) > _LONG_NAME:
        name = f"{name[:_LONG_NAME - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f".{name}.{kind}"


def artifact_bytes_per_checkpoint_byte() -> float:
    """Artifact bytes per checkpoint byte for the compile pipeline as it is (each pass writes an IR step).

    Counted from the pipeline, not fixed: the passes added for the general neuron and the declared
    input took the bundled model's artifact from 11.2x to 15.7x its checkpoint (resnet20: 12.3x).
    """
    from inflor_deploy.passes.pipeline import COMPILE_PIPELINE, FLOAT_PIPELINE

    float_steps = 1 + len(FLOAT_PIPELINE)  # the import, then each float pass
    fixed_steps = len(COMPILE_PIPELINE) - len(FLOAT_PIPELINE) + 1  # each fixed-point pass, and fixed_point.npz
    return (float_steps * FLOAT_STEP_BYTES_PER_CHECKPOINT_BYTE + fixed_steps * FIXED_STEP_BYTES_PER_CHECKPOINT_BYTE
            + ONNX_BYTES_PER_CHECKPOINT_BYTE)  # fmt: skip


def estimate_artifact_bytes(checkpoint: Path) -> int:
    """Disk space an artifact compiled from ``checkpoint`` needs, estimated from its size (see the constants)."""
    return int(artifact_bytes_per_checkpoint_byte() * checkpoint.stat().st_size) + ARTIFACT_OVERHEAD_BYTES


def _short(path: Path | str) -> str:
    """A path for a message: very long ones with their middle elided."""
    text = str(path)
    return text if len(text) <= 120 else f"{text[:56]}...{text[-56:]}"


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


def check_output_path(out: str | Path, *, need_bytes: int = 0, what: str = "output") -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Args:
        out: The file or directory to be created (or replaced).
        need_bytes: Free space required on its file system (0: not checked).
        what: How the output is named in messages (``"artifact"``, ``"checkpoint"``).

    Raises:
        OutputError: A path component is longer than ``NAME_MAX``, the path
            (with room for the files inside) exceeds ``PATH_MAX``, the nearest
            existing directory is not a directory or not writable, or the
            file system has less than ``need_bytes`` free.
    """
    out = Path(os.path.abspath(out))
    base = nearest_existing_dir(out.parent)
    if not os.path.isdir(base):
        raise OutputError(f"cannot write the {what} {_short(out)}: {_short(base)} is a file, not a directory; choose another path")
    name_max = _pathconf(base, "PC_NAME_MAX", 255)
    path_max = _pathconf(base, "PC_PATH_MAX", 4096)
    for part in out.relative_to(base).parts:
        if len(part.encode()) > name_max:
            raise OutputError(
                f"cannot write the {what} {_short(out)}: the name {part[:40]}... is {len(part.encode())} bytes long; this "
                f"file system allows at most {name_max} (NAME_MAX) per path component: choose a shorter name"
            )
    if len(str(out).encode()) + INNER_PATH_RESERVE > path_max:
        raise OutputError(
            f"cannot write the {what} {_short(out)}: the path is {len(str(out).encode())} bytes long and the "
            f"files inside need {INNER_PATH_RESERVE} more; the limit is {path_max} (PATH_MAX): choose a shorter path"
        )
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=".inflor-write-test-"))
    except OSError as err:
        raise output_error(err, _short(base), doing=f"create the {what} {_short(out)} in") from err
    if need_bytes:
        stats = os.statvfs(base)
        free = stats.f_bavail * stats.f_frsize
        if free < need_bytes:
            raise OutputError(
                f"cannot write the {what} {_short(out)}: it needs about {_megabytes(need_bytes)} and only "
                f"{_megabytes(free)} is free on the file system of {_short(base)}; free space there or choose another path"
            )


def _pathconf(path: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(path, name))
    except (OSError, ValueError):
        return default


# --------------------------------------------------------------------------- locking


_local = threading.local()  # .held: lock path -> how many times this thread holds it (re-entrant per thread)


def _held() -> dict[str, int]:
    if not hasattr(_local, "held"):
        _local.held = {}
    return _local.held


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    started = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} (`{info.get('command', '?')}`, started {started})"


def _command_line() -> str:
    argv = list(sys.argv) or ["python"]
    argv[0] = Path(argv[0]).name
    return " ".join(argv)


@contextlib.contextmanager
def output_lock(target: str | Path, *, wait: bool) -> Iterator[None]:
    """Hold the lock of ``target`` (a file ``.NAME.lock`` beside it) inside the block.

    Args:
        target: The output the lock protects.
        wait: Wait for another holder to finish (a ``--force`` write), or
            fail at once naming it.

    Raises:
        OutputError: Another process holds the lock and ``wait`` is False.

    A directory this process cannot write needs no lock: nobody can replace
    ``target`` there either, so the block runs unlocked.
    """
    target = Path(os.path.abspath(target))
    lock_path = target.parent / sibling_name(target, "lock")
    key, held = str(lock_path), _held()
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            yield  # the parent does not exist yet: the writer creates it and locks what it writes into
            return
        except OSError as err:
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                yield
                return
            raise output_error(err, lock_path, doing="create the lock file") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"{target} is being written by {_holder(lock_path)}; choose another -o, or wait for it to "
                "finish and pass --force to replace its output (with --force this command waits for it)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # A releasing holder unlinks the file while it still holds it: lock the one now at the path.
        try:
            current = os.stat(lock_path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": _command_line(), "started": time.time()}).encode())
        held[key] = 1
        yield
    finally:
        held.pop(key, None)
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def reserve_file(out: str | Path, force: bool, *, need_bytes: int = 0, what: str = "output file") -> Iterator[None]:
    """Check the file ``out`` before the work and hold its lock while the block computes and writes it.

    The block writes with ``write_file_atomically(out, ..., replace=force)``.
    Without ``force`` an existing ``out`` is refused, before the work and
    again under the lock, and a second writer fails at once naming this
    one; with ``force`` the block waits for another writer of ``out`` to
    finish, then replaces its file (the last one wins, atomically).

    Raises:
        OutputError: ``out`` cannot be written (:func:`check_output_path`),
            is a directory, exists (without ``force``), or is being written
            by another process (without ``force``).
    """
    out = Path(out)

    def refuse_existing() -> None:
        if os.path.isdir(out):
            raise OutputError(f"{_short(out)} is a directory; give the path of the {what} to write with -o")
        if not force and os.path.lexists(out):
            raise OutputError(f"{_short(out)} already exists; choose another -o or pass --force to replace it")

    check_output_path(out, need_bytes=need_bytes, what=what)
    refuse_existing()
    with output_lock(out, wait=force):
        refuse_existing()  # again under the lock: a writer may have finished meanwhile
        yield


# --------------------------------------------------------------------------- renaming


_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2  # linux/fs.h
_AT_FDCWD = -100
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2 if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _renameat2 = None


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2``; False where the kernel, libc or file system lacks it (then the caller falls back)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def rename_into_place(staging: Path, out: Path, *, replace: bool) -> Path | None:
    """Move the finished directory ``staging`` to ``out``.

    Args:
        staging: A complete directory beside ``out``.
        out: Its final path.
        replace: Swap with an existing ``out`` (one atomic exchange); else refuse an existing one.

    Returns:
        The path now holding the old output, to be removed by the caller (None if there was none).

    Raises:
        FileExistsError: ``out`` exists and ``replace`` is False.
    """
    if not replace:
        if _rename2(staging, out, _RENAME_NOREPLACE):
            return None
        if out.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(out))
        os.rename(staging, out)
        return None
    if out.exists():
        if _rename2(staging, out, _RENAME_EXCHANGE):
            return staging  # now holds the old output
        retired = Path(tempfile.mkdtemp(dir=out.parent, prefix=sibling_name(out, "old-")))
        retired.rmdir()
        os.replace(out, retired)
        os.replace(staging, out)
        return retired
    os.replace(staging, out)
    return None
