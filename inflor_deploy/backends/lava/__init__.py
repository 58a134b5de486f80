"""The Lava backend: :mod:`~inflor_deploy.backends.lava.network` builds and runs a
scheduled fixed-point graph on Lava's Loihi 2 simulator; :mod:`~inflor_deploy.backends.lava.procs`
holds the project's own Lava Processes (one package each, for Lava's model discovery).

Nothing here is imported eagerly: importing Lava is slow and needs the shims of
:mod:`inflor_deploy.lava_compat`.
"""
