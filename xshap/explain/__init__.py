"""Running the engine over rows, references and devices: ``DeepExplainer`` (shap's API), the single-baseline
and Captum-style calls (``single``), the explained model as a JAX function of one row (``model``), input
checks (``data``), chunking and sharding (``devices``, ``compiling``), and the layer-by-layer summary and
``shap.Explanation`` views of one explanation.

Imports ``xshap.engine`` and ``converters``; nothing of ``xshap.check``.
"""
