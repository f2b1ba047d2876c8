"""xshap: DeepLIFT / DeepSHAP on whole JAX graphs, to check shap's and Captum's attributions.

The package follows the pipeline: ``xshap.engine`` (DeepLIFT on jaxprs, no torch), ``xshap.explain`` (the
explainers over rows and devices), ``xshap.check`` (the cross-check with shap and Captum and its report),
and the application modules at the top (``cli``, ``demo``, ``seed``, ``loading``). Imports run one way:
application -> check -> explain -> engine; ``converters`` (torch -> JAX) imports nothing from xshap.
"""

from xshap.check.crosscheck import crosscheck
from xshap.check.report import CrosscheckReport
from xshap.check.tokens import crosscheck_tokens
from xshap.engine.transform import deeplift
from xshap.errors import InputError, NoRuleError, XShapError, XShapIncompleteError
from xshap.explain.explainer import Attribution, DeepExplainer
from xshap.explain.layer_explainer import LayerAttribution, LayerExplainer
from xshap.explain.neurons import NeuronExplainer
from xshap.explain.single import DeepLift, attribute
from xshap.explain.summary import summary
from xshap.explain.text import TokenExplainer

__all__ = [
    "Attribution",
    "CrosscheckReport",
    "DeepExplainer",
    "DeepLift",
    "InputError",
    "LayerAttribution",
    "LayerExplainer",
    "NeuronExplainer",
    "NoRuleError",
    "TokenExplainer",
    "XShapError",
    "XShapIncompleteError",
    "attribute",
    "crosscheck",
    "crosscheck_tokens",
    "deeplift",
    "summary",
]
__version__ = "0.1.0"
