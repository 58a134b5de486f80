"""Custom Lava Processes of inflor-deploy, one subpackage per Process.

Lava finds a Process's models by *executing every sibling ``.py`` file* of
the module that defines the Process (``ProcGroupDiGraphs._find_proc_models``
in lava-nc 0.10.0). Each Process therefore lives alone in its own package,
with only its ``process.py`` and ``models.py`` beside it, and both import
Lava only after :func:`inflor_deploy.lava_compat.apply`.

* :mod:`inflor_deploy.backends.lava.procs.soft_reset` — ``SoftResetLIF``, the CUBA
  neuron with a subtractive (soft) reset that InfLoR's SRIF needs.
"""
