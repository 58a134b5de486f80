"""NIR out: the float IR as a NIR graph, the reset mode NIR cannot state kept in metadata (:mod:`.writer`)."""

from inflor_deploy.backends.nir.writer import NirCheckFailed, NirExport, NirExportRefusal, export_nir, graph_to_nir

__all__ = ["NirCheckFailed", "NirExport", "NirExportRefusal", "export_nir", "graph_to_nir"]
