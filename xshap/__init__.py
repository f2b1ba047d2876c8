"""xshap: DeepLIFT / DeepSHAP on whole JAX graphs, to check shap's and Captum's attributions."""

from xshap.crosscheck import crosscheck
from xshap.errors import InputError, NoRuleError, XShapError, XShapIncompleteError
from xshap.explainer import Attribution, DeepExplainer
from xshap.report import CrosscheckReport
from xshap.single import DeepLift, attribute
from xshap.transform import deeplift

__all__ = [
    "Attribution",
    "CrosscheckReport",
    "DeepExplainer",
    "DeepLift",
    "InputError",
    "NoRuleError",
    "XShapError",
    "XShapIncompleteError",
    "attribute",
    "crosscheck",
    "deeplift",
]
__version__ = "0.1.0"
