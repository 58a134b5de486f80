"""Backends: what the (fixed-point) IR runs on or is written as.

* :mod:`inflor_deploy.backends.sim` — float IR runner, integer reference and
  the fast bit-exact fixed-point simulator (the oracle);
* :mod:`inflor_deploy.backends.lava` — Lava Processes on Lava's Loihi 2 simulator;
* :mod:`inflor_deploy.backends.onnx` — float and integer per-timestep ONNX.
"""
