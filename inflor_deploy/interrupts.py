"""Stopping cleanly: termination signals become an exception, and forked workers die with their parent.

Why this exists: a process that dies of SIGTERM or SIGHUP runs no
``finally`` block. Lava's worker processes and its ``/dev/shm`` segments
then outlive it (a digits run: 12 Lava processes, Python's resource
tracker and 32 segments; a recorded verify run more), and an
artifact's staging directory stays on disk. Raised as an exception instead,
the signal unwinds the stack the way Ctrl-C does: every ``finally`` runs,
the Lava runtime is torn down, staging directories are removed, and the
CLI prints one line and exits with ``128 + signum``.

* :class:`Interrupted` is that exception. It is a ``KeyboardInterrupt``, so
  ``except Exception`` never swallows it and code that already cleans up
  on Ctrl-C cleans up on SIGTERM and SIGHUP too.
* :func:`signals_raise` makes SIGINT, SIGTERM and SIGHUP raise it in the
  main thread. A signal the process was told to ignore stays ignored
  (``nohup`` sets SIGHUP to SIG_IGN), and a handler someone else installed
  is left alone.
* :func:`deferred` holds a signal back while a teardown runs, so a second
  Ctrl-C cannot cut the teardown short; it is raised when the block ends.
  Lava's start-up (compiling, forking its workers) runs deferred too: a
  signal handled inside another library's after-fork hook would be
  dropped, or leave that library's lock held.
* :func:`check` raises a signal whose exception Python had to drop (one
  raised in a ``__del__`` or an at-fork hook is only printed as
  "Exception ignored"; inside :func:`signals_raise` it is not even printed).
  Long waits call it.
* :func:`quiet_children` makes every process forked inside it (Lava forks
  its workers and its shared-memory manager) ignore those three signals and
  die with its parent (Linux ``PR_SET_PDEATHSIG``). Ctrl-C reaches the
  whole foreground process group; without this, every worker printed its
  own ``KeyboardInterrupt`` traceback. The parent alone decides when they
  stop, and a parent killed outright (SIGKILL) still takes them along.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
from typing import Iterator

__all__ = [
    "HANDLED_SIGNALS",
    "Interrupted",
    "LEFT_BEHIND",
    "check",
    "deferred",
    "describe",
    "pending",
    "quiet_children",
    "reap_children",
    "signals_raise",
]

#: The signals that stop a command: Ctrl-C, `kill`, and a closed terminal.
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

#: Marks a cleanup note that reports something it could not remove (:func:`describe` then says so).
LEFT_BEHIND = "COULD NOT"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Interrupted(KeyboardInterrupt):
    """A termination signal arrived; raised in the main thread where it was executing.

    Attributes:
        signum: The signal's number.
    """

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.signal_name}")

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_status(self) -> int:
        """The shell's convention for a command stopped by a signal: 128 + signum."""
        return 128 + self.signum


# --------------------------------------------------------------------------- signals -> exception

#: Signals received while our handlers were installed (cleared when the installing block ends).
_received: list[int] = []
#: ``len(_received)`` when each open :func:`deferred` block began (innermost last).
_deferred_from: list[int] = []
#: Forks in progress in this process (a signal is only recorded meanwhile).
_forking = 0


def _raise_interrupted(signum, _frame):
    _received.append(signum)
    if _deferred_from or _forking:
        return  # deferred() raises it when its block ends; check() after a fork
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise(signums: tuple[int, ...] = HANDLED_SIGNALS) -> Iterator[None]:
    """Inside the block, each of ``signums`` raises :class:`Interrupted` in the main thread.

    Only signals still at their default disposition (or Python's default
    SIGINT handler) are taken over: an ignored signal stays ignored and a
    handler installed by someone else stays theirs. The previous handlers
    are restored on exit. Outside the main thread (where Python cannot
    install handlers) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in signums:
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler):
            previous[signum] = current
            signal.signal(signum, _raise_interrupted)
    hook = sys.unraisablehook
    if previous:
        sys.unraisablehook = functools.partial(_unraisable, hook)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if previous:
            sys.unraisablehook = hook
            _received.clear()


def _unraisable(default, unraisable) -> None:
    """Drop an Interrupted raised where Python cannot propagate it (``__del__``, at-fork hooks).

    Python prints those as "Exception ignored in ..." with a traceback; the
    signal stays recorded and :func:`check` raises it where it can propagate.
    """
    if not isinstance(unraisable.exc_value, Interrupted):
        default(unraisable)


def check() -> None:
    """Raise :class:`Interrupted` if a signal arrived whose exception never reached the caller.

    Python runs a signal handler at the next bytecode boundary, which can be
    inside a callback whose exceptions are printed and dropped (a ``__del__``,
    a ``register_at_fork`` hook: forking Lava's workers is where a Ctrl-C to
    the process group lands). Call this where a long wait or a risky stretch
    ends; it raises again what was dropped.
    """
    if _received and not _deferred_from and not _forking:
        raise Interrupted(_received[0])


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold termination signals back inside the block; raise the first one that arrived when it ends.

    If the block itself raises, that exception goes on: the process is
    stopping already.
    """
    _deferred_from.append(len(_received))
    try:
        yield
    finally:
        seen = _deferred_from.pop()
    if len(_received) > seen and not _deferred_from:
        raise Interrupted(_received[seen])


def pending() -> bool:
    """A signal arrived inside the open :func:`deferred` block (a teardown may want to hurry)."""
    return bool(_deferred_from) and len(_received) > _deferred_from[-1]


def describe(err: BaseException) -> str:
    """One line for an interruption: which signal, and what was stopped or removed (the exception's notes)."""
    signum = getattr(err, "signum", signal.SIGINT)
    what = "Ctrl-C (SIGINT)" if signum == signal.SIGINT else signal.Signals(signum).name
    notes = [note for note in getattr(err, "__notes__", []) if note]
    verdict = "SOMETHING WAS LEFT BEHIND (named in this line)" if any(LEFT_BEHIND in n for n in notes) else "nothing was left behind"
    return "; ".join([f"interrupted by {what}", *notes, verdict])


# --------------------------------------------------------------------------- forked children

_quiet_depth = 0
_parent_pid = 0
try:  # resolved here, not in the child: a forked child of a threaded parent must not load libraries
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _prctl = None


def _after_fork_in_child() -> None:
    global _parent_pid
    if not _quiet_depth:
        return
    for signum in HANDLED_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != _parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    _parent_pid = os.getpid()  # for anything this child forks in turn


def _before_fork() -> None:
    # A handler raising inside another library's after-fork hook (logging's
    # `_releaseLock`) would be dropped; held back here, check() raises it.
    global _forking
    _forking += 1


def _after_fork_in_parent() -> None:
    global _forking
    _forking -= 1


def _after_fork_in_child_outer() -> None:
    global _forking
    _after_fork_in_child()  # first: until the signals are ignored, the inherited counters only record them
    _forking = 0
    _received.clear()
    _deferred_from.clear()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child_outer)  # fmt: skip


def _start_resource_tracker_shielded() -> None:
    """Start Python's shared-memory resource tracker with SIGHUP blocked (inherited across its exec).

    The tracker ignores SIGINT and SIGTERM itself but dies of SIGHUP, which
    a closed terminal sends to the whole process group; unlinking a segment
    afterwards would then relaunch it with a warning. A tracker that is
    already running is left as it is.
    """
    from multiprocessing import resource_tracker

    if threading.current_thread() is not threading.main_thread():
        resource_tracker.ensure_running()
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def quiet_children() -> Iterator[None]:
    """Processes forked inside the block ignore SIGINT, SIGTERM and SIGHUP and die with this process.

    Use it around code that forks workers this process will stop itself
    (Lava's runtime). Processes forked outside the block are not affected.
    """
    global _quiet_depth, _parent_pid
    if sys.platform.startswith("linux"):
        _start_resource_tracker_shielded()
    _quiet_depth += 1
    _parent_pid = os.getpid()
    try:
        yield
    finally:
        _quiet_depth -= 1


def reap_children(started_before: set | None = None) -> int:
    """Kill and join this process's multiprocessing children not in ``started_before``; return how many were alive."""
    known = started_before or set()
    stopped = 0
    for child in multiprocessing.active_children():
        if child in known:
            continue
        with contextlib.suppress(ValueError, OSError, AssertionError):
            if child.is_alive():
                child.kill()
                stopped += 1
            child.join()  # after SIGKILL this returns at once; Lava's SystemProcess.join takes no timeout
    return stopped
