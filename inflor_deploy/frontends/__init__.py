"""Front ends: a trained model -> the float IR.

* :mod:`inflor_deploy.frontends.zoo` — the project's own model zoo
  (:func:`~inflor_deploy.nn.build_model` networks);
* :mod:`inflor_deploy.frontends.input_spec` — the declared input (range,
  pixel levels, normalization, encoding) written into any front end's graph.
"""
