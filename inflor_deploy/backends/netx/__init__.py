"""lava-dl NetX HDF5 export: the route onto a physical Loihi 2 (stock CUBA neurons; see docs/netx.md).

* :mod:`.writer`: which graphs can be written, and the file itself;
* :mod:`.run`: load it with lava-dl, run it on Lava's simulator, check it bit for bit;
* :mod:`.export`: both together, atomically (what ``inflor-deploy export --format netx`` calls).

Lava is imported only when a file is loaded or run.
"""
