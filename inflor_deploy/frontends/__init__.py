"""Front ends: a trained model -> the float IR.

* :mod:`inflor_deploy.frontends.fx` — any ``nn.Module``, captured with
  ``torch.fx`` (the project's zoo networks included); framework knowledge
  lives in :mod:`inflor_deploy.frontends.adapters`, one module per framework.
* :mod:`inflor_deploy.frontends.user_model` — a user's model from
  ``MODULE:FACTORY`` plus a plain ``state_dict``.
* :mod:`inflor_deploy.frontends.source` — where a compiled model came from,
  and how ``verify`` rebuilds it.
* :mod:`inflor_deploy.frontends.input_spec` — the declared input (range,
  pixel levels, normalization, encoding) written into any front end's graph.
"""
