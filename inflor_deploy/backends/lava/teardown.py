"""Stopping a Lava runtime so that no worker process and no shared memory outlives the run.

What one run owns (read in ``lava/magma/runtime/`` of lava-nc 0.10.0):

* one forked worker per ProcessModel and one per runtime service
  (``SystemProcess``, listed in ``runtime._messaging_infrastructure.actors``);
* a ``multiprocessing.managers.SharedMemoryManager`` server process (forked,
  wrapped by Lava's ``SharedMemoryManager`` as ``infra.smm``) that records
  every channel segment and unlinks them when it shuts down;
* one ``/dev/shm/psm_*`` segment per channel, created in *this* process
  (``managers.SharedMemoryManager.SharedMemory``) and registered with
  Python's resource tracker; Lava keeps the handles in
  ``smm._shared_memory_handles``;
* two semaphores per channel; under the fork start method Python unlinks
  them at creation, so they leave nothing in ``/dev/shm``.

A graceful ``runtime.stop()`` waits for every worker's reply. After a
failed or interrupted run some replies never come (a worker died, or the
runtime is mid-step), so then, or when the graceful stop exceeds its
timeout, :func:`stop_runtime` kills the workers, shuts the manager down,
unlinks any segment the manager did not, and kills any process the run
forked that is still alive (one interrupted while Lava was still starting
its workers is in no list of Lava's). Lava has no public API for this, so
the private attributes above are used on purpose, and only here.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from inflor_deploy import interrupts

#: Seconds a graceful ``runtime.stop()`` may take before the workers are killed.
STOP_TIMEOUT_S = 20.0
_SHM_DIR = "/dev/shm"


@dataclass
class Teardown:
    """What stopping one Lava runtime did.

    Attributes:
        graceful: The runtime answered a normal ``stop()``.
        processes: Worker and manager processes the run had (all stopped unless listed in ``leftover_processes``).
        segments: Shared-memory segments the run had created.
        leftover_processes: Pids still alive afterwards (should be empty).
        leftover_segments: Segment names still in /dev/shm afterwards (should be empty).
    """

    graceful: bool
    processes: int = 0
    segments: int = 0
    leftover_processes: list[int] = field(default_factory=list)
    leftover_segments: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.leftover_processes and not self.leftover_segments

    def summary(self) -> str:
        line = f"stopped {self.processes} Lava processes and freed {self.segments} shared-memory segments"
        if self.leftover_processes:
            line += f"; {interrupts.LEFT_BEHIND} STOP pids {self.leftover_processes}"
        if self.leftover_segments:
            line += f"; {interrupts.LEFT_BEHIND} UNLINK {', '.join(_SHM_DIR + '/' + s for s in self.leftover_segments)}"
        return line


def _segment_names(infra) -> list[str]:
    smm = getattr(infra, "smm", None)
    handles = getattr(smm, "_shared_memory_handles", None) or []
    return [handle.name for handle in handles]


def _owned_processes(infra) -> list:
    actors = list(getattr(infra, "actors", None) or [])
    manager = getattr(getattr(getattr(infra, "smm", None), "_manager", None), "_process", None)
    return actors + ([manager] if manager is not None else [])


def stop_runtime(anchor, *, graceful: bool, started_before: set | None = None,
                 timeout: float = STOP_TIMEOUT_S) -> Teardown:  # fmt: skip
    """Stop the runtime of ``anchor``'s network; never leave workers or shared memory behind.

    Args:
        anchor: A Process of the network (its ``runtime`` is stopped).
        graceful: Try ``runtime.stop()`` first (the run ended normally).
        started_before: ``multiprocessing.active_children()`` before the run
            began; any other child still alive at the end is killed.
        timeout: Seconds the graceful stop may take.

    Returns:
        What was stopped and freed, and anything that could not be.
    """
    with interrupts.deferred():
        runtime = getattr(anchor, "runtime", None)
        infra = getattr(runtime, "_messaging_infrastructure", None)
        names = _segment_names(infra)
        processes = _owned_processes(infra)
        stopped_gracefully = False
        if runtime is not None and graceful:
            stopped_gracefully = _stop_gracefully(runtime, timeout)
        if runtime is not None and not stopped_gracefully:
            _force_stop(runtime)
        interrupts.reap_children(started_before)
        result = Teardown(graceful=stopped_gracefully, processes=len(processes), segments=len(names))
        result.leftover_processes = [p.pid for p in processes if _alive(p)]
        if os.path.isdir(_SHM_DIR):
            result.leftover_segments = [s for s in names if os.path.exists(os.path.join(_SHM_DIR, s.lstrip("/")))]
        return result


@contextlib.contextmanager
def guarded_run(anchor) -> Iterator[None]:
    """Run a Lava network inside the block so that no fault leaves a worker or a segment behind.

    Inside the block SIGINT, SIGTERM and SIGHUP raise
    :class:`~inflor_deploy.interrupts.Interrupted`, and every process Lava
    forks ignores them and dies with this one
    (:func:`~inflor_deploy.interrupts.quiet_children`). When the block ends
    the runtime of ``anchor``'s network is stopped: gracefully after a
    normal end; after an exception or a signal the workers are killed, the
    shared memory freed, strays reaped, and what was stopped is added to the
    exception as a note (the CLI's one line reports it). Every Lava runner
    (ours, NetX) starts its runtime inside this block with
    :func:`create_runtime`.
    """
    with interrupts.signals_raise(), interrupts.quiet_children():
        started_before = set(multiprocessing.active_children())
        try:
            yield
        except BaseException as err:
            err.add_note(stop_runtime(anchor, graceful=False, started_before=started_before).summary())
            raise
        stop_runtime(anchor, graceful=True, started_before=started_before)


def create_runtime(anchor, run_cfg) -> None:
    """``anchor.create_runtime(run_cfg=run_cfg)`` with termination signals held back until it returns.

    Lava compiles and forks its workers here; a signal handled inside another
    library's after-fork hook would be dropped, or leave that library's lock
    held, so it is raised when the workers exist (and :func:`guarded_run`
    then stops them).
    """
    with interrupts.deferred():
        anchor.create_runtime(run_cfg=run_cfg)


def _alive(process) -> bool:
    try:
        return process.is_alive()
    except (ValueError, AssertionError):  # closed: joined already
        return False


def _stop_gracefully(runtime, timeout: float) -> bool:
    """``runtime.stop()`` in a helper thread (it blocks on replies that may never come); True if it finished."""
    done = threading.Event()

    def stop():
        try:
            runtime.stop()
            done.set()
        except BaseException:  # noqa: BLE001 - any failure falls through to the forced stop
            pass

    worker = threading.Thread(target=stop, name="lava-stop", daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    # A signal held back meanwhile (Ctrl-C) means: stop waiting, kill them.
    while worker.is_alive() and time.monotonic() < deadline and not interrupts.pending():
        worker.join(0.05)
    return done.is_set()


def _force_stop(runtime) -> None:
    infra = getattr(runtime, "_messaging_infrastructure", None)
    for actor in list(getattr(infra, "actors", None) or []):
        try:
            if actor.is_alive():
                actor.kill()
            actor.join()
        except (ValueError, AssertionError, OSError):
            pass  # already joined and closed
    smm = getattr(infra, "smm", None)
    handles = list(getattr(smm, "_shared_memory_handles", None) or [])
    if smm is not None:
        # The manager unlinks every segment it tracks; if it is gone, it cannot.
        with contextlib.suppress(Exception):
            smm.shutdown()
    for handle in handles:
        with contextlib.suppress(FileNotFoundError, OSError):
            handle.close()
        with contextlib.suppress(FileNotFoundError):
            handle.unlink()
    watchdog = getattr(runtime, "_watchdog_manager", None)
    if watchdog is not None:
        with contextlib.suppress(Exception):
            watchdog.stop()
    # Runtime.__del__ calls stop() while _is_started, which would block on dead workers.
    runtime._is_started = False
    runtime._is_running = False
