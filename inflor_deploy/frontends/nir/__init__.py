"""The NIR front end: a ``.nir`` file (or a ``nir.NIRGraph``) -> the float IR; see :mod:`.importer`.

    from inflor_deploy.frontends.nir import from_nir
    graph = from_nir("model.nir", timesteps=4, reset="subtract")   # the float IR

The time conventions, the reset mode NIR cannot state and the metadata this
project writes are in :mod:`inflor_deploy.nir_semantics`; ``docs/nir.md`` is
the user's guide. Level 1 of the parity ladder for a NIR artifact runs
:mod:`.reference` (the NIR graph evaluated as NIR defines it, or the
framework's own module).
"""

from __future__ import annotations

from inflor_deploy.frontends.nir.importer import REFUSED, SUPPORTED_NODES, NirImport, import_nir, load_nir
from inflor_deploy.nir_semantics import CONVENTION_NAMES, NirImportError

__all__ = ["CONVENTION_NAMES", "NirImport", "NirImportError", "REFUSED", "SUPPORTED_NODES", "from_nir", "import_nir",
           "load_nir"]


def from_nir(graph_or_path, timesteps: int, **options):
    """The validated float IR of a NIR graph or ``.nir`` file (:func:`.importer.import_nir` for the options)."""
    return import_nir(graph_or_path, timesteps=timesteps, **options).graph
