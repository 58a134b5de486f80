"""Export a compiled artifact's fixed-point IR as a NetX HDF5 file, atomically, optionally checked first.

    export_netx(graph, path, check_images=images) -> NetxExport

Order of work (nothing is left at ``path`` unless every step passed):

1. :func:`~inflor_deploy.backends.netx.writer.plan_netx` refuses what stock
   CUBA blocks cannot express (a :class:`NetxRefusal` naming the reason)
   before any file exists;
2. the file is written next to ``path`` under a temporary name;
3. with ``check_images``, lava-dl loads that temporary file and runs it on
   Lava's ``Loihi2SimCfg(select_tag="fixed_pt")``; if it is not bit-exact
   with the fixed-point simulator the file is deleted and
   :class:`NetxCheckFailed` carries the first divergence;
4. the file is renamed onto ``path`` (an existing file only with ``force``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inflor_deploy.atomic import write_file_atomically
from inflor_deploy.errors import InflorError
from inflor_deploy.integrity import sha256
from inflor_deploy.ir.graph import Graph
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
        InflorError: ``path`` exists (without ``force``) or is a directory.
        NetxCheckFailed: The check was not bit-exact; nothing was written.
    """
    start = time.perf_counter()
    path = Path(path)
    if path.is_dir():
        raise InflorError(f"{path} is a directory; give the NetX file's name, e.g. -o model.net")
    if path.exists() and not force:
        raise InflorError(f"{path} already exists; choose another -o or pass --force to replace it")
    plan = plan_netx(graph, allow_inexact=allow_inexact)
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

    write_file_atomically(path, write, suffix=".tmp")
    return NetxExport(
        path=path, plan=plan, check=result["check"], sha256=sha256(path), seconds=time.perf_counter() - start
    )
