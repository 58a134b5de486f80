"""inflor-deploy: spiking networks from PyTorch to Loihi 2 fixed point, bit-exactly verified.

``inflor_deploy.trace(model, input_shape=(C, H, W), timesteps=T)`` returns the
float IR of any supported ``nn.Module``; ``inflor_deploy.compile(model, ...,
output=OUT)`` writes and returns the artifact (:mod:`inflor_deploy.api`).
Both are imported on first use, so ``import inflor_deploy`` stays light.
"""

__all__ = ["compile", "trace"]


def __getattr__(name: str):
    if name in __all__:
        from inflor_deploy import api

        return getattr(api, name)
    raise AttributeError(f"module 'inflor_deploy' has no attribute {name!r}")
