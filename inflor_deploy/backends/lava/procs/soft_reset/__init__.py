"""The soft-reset CUBA neuron: :class:`SoftResetLIF` and its float / bit-accurate models.

Importing this package applies the Lava shims (:mod:`inflor_deploy.lava_compat`).
The models are found by Lava's discovery in ``models.py``; import them
explicitly only to subclass or inspect them.
"""

from inflor_deploy.backends.lava.procs.soft_reset.process import SoftResetLIF

__all__ = ["SoftResetLIF"]
