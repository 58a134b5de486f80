"""Export a compiled artifact's fixed-point IR as a NetX HDF5 file, atomically, optionally checked first.

    export_netx(graph, path, check_images=images) -> NetxExport

Order of work (nothing is left at ``path`` unless every step passed):

0. ``path`` is checked and locked as ``compile`` checks and locks its
   artifact (:func:`~inflor_deploy.outputs.reserve_file`): its length, a
   writable directory and free space before any work; an existing file is
   refused without ``force``; a second export to the same file fails at once
   naming the first (with ``force`` it waits, then replaces: the last one wins);
1. :func:`~inflor_deploy.backends.netx.writer.plan_netx` refuses what stock
   CUBA blocks cannot express (a :class:`NetxRefusal` naming the reason)
   before any file exists;
2. the file is written next to ``path`` under a temporary name;
3. with ``check_images``, lava-dl loads that temporary file and runs it on
   Lava's ``Loihi2SimCfg(select_tag="fixed_pt")``; if it is not bit-exact
   with the fixed-point simulator the file is deleted and
   :class:`NetxCheckFailed` carries the first divergence;
4. the file is renamed onto ``path`` (an existing file only with ``force``).

Ctrl-C, SIGTERM or SIGHUP at any step (inside the CLI, or any caller of
:func:`inflor_deploy.interrupts.signals_raise`) removes the temporary file
and the lock, and the check's Lava run is torn down like every Lava run
(:func:`~inflor_deploy.backends.lava.teardown.guarded_run`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.integrity import sha256
from inflor_deploy.ir.graph import Graph
from inflor_deploy.outputs import OutputError, reserve_file
from inflor_deploy.backends.netx.writer import NetxPlan, plan_netx, write_netx_file

__all__ = ["NetxCheckFailed", "NetxExport", "export_netx"]


class NetxCheckFailed(RuntimeError):
    """The written file did not run bit-exactly in Lava; it was not kept. ``check`` holds the divergence."""

    def __init__(self, check):
        super().__init__(check.summary())
        self.check = check


@dataclass
class NetxExport:
    """What :func:`export_netx` wrote.

    Attributes:
        path: The NetX file.
        plan: The blocks and how to load and read the file.
        check: The Lava check on the given images, or None when not run.
        sha256: The file's sha256.
        seconds: Wall time (writing and checking).
    """

    path: Path
    plan: NetxPlan
    check: Any
    sha256: str
    seconds: float


def export_netx(
    graph: Graph,
    path: str | Path,
    *,
    check_images: np.ndarray | None = None,
    allow_inexact: bool = False,
    force: bool = False,
    source: dict[str, Any] | None = None,
) -> NetxExport:
    """Write ``graph`` as a lava-dl NetX HDF5 file at ``path``.

    Args:
        graph: A scheduled fixed-point graph (an artifact's ``fixed_graph``).
        path: The ``.net`` file to write.
        check_images: ``[B, *input_shape]`` images to run through the written
            file in Lava before it is kept; None skips the check.
        allow_inexact: Write soft-reset layers as hard-reset CUBA layers (the
            check then reports their spike and class agreement) instead of refusing.
        force: Replace an existing file.
        source: Provenance recorded in the file's metadata.

    Raises:
        NetxRefusal: The graph cannot be written (reason named); nothing was written.
        OutputError: ``path`` cannot be written, is a directory, exists (without ``force``) or is being
            written by another export (without ``force``).
        NetxCheckFailed: The check was not bit-exact; nothing was written.
    """
    start = time.perf_counter()
    path = Path(path)
    with reserve_file(path, force, need_bytes=_file_bytes_estimate(graph), what="NetX file"):
        plan = plan_netx(graph, allow_inexact=allow_inexact)
        check = _write(plan, graph, path, check_images, source, force)
    return NetxExport(path=path, plan=plan, check=check, sha256=sha256(path), seconds=time.perf_counter() - start)


def _file_bytes_estimate(graph: Graph) -> int:
    """Disk space the file needs at most: the graph's arrays as int64 (the file stores them narrower) + 1 MiB."""
    values = [getattr(node, f.name) for node in graph for f in dataclasses.fields(node)]
    arrays = [value for value in values if isinstance(value, np.ndarray)]
    return 8 * sum(int(a.size) for a in arrays) + (1 << 20)


def _write(plan: NetxPlan, graph: Graph, path: Path, check_images, source, force: bool):
    """Write the planned file beside ``path``, check it in Lava when asked, and rename it onto ``path``."""
    result: dict[str, Any] = {"check": None}

    def write(tmp: Path) -> None:
        write_netx_file(plan, tmp, source)
        if check_images is not None:
            from inflor_deploy.backends.netx.run import check_netx

            check = check_netx(graph, tmp, check_images, plan=plan)
            check.path = str(path)
            if not check.parity.ok:
                raise NetxCheckFailed(check)
            result["check"] = check

    try:
        write_file_atomically(path, write, suffix=".tmp", replace=force)
    except FileExistsError:
        raise OutputError(
            f"{path} appeared while this export ran (written by a process that does not lock it); "
            "choose another -o or pass --force to replace it"
        ) from None
    return result["check"]
