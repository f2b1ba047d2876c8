"""xshap: DeepLIFT / DeepSHAP on whole JAX graphs, to check shap's and Captum's attributions."""

from xshap.crosscheck import crosscheck
from xshap.errors import InputError, NoRuleError, XShapError, XShapIncompleteError
from xshap.explainer import Attribution, DeepExplainer
from xshap.report import CrosscheckReport
from xshap.transform import DeepLift, deeplift

__all__ = [
    "Attribution",
    "CrosscheckReport",
    "DeepExplainer",
    "DeepLift",
    "InputError",
    "NoRuleError",
    "XShapError",
    "XShapIncompleteError",
    "crosscheck",
    "deeplift",
]
__version__ = "0.1.0"
