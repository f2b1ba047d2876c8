"""Checks before a torch model is exported: each names a problem that export would report as something else.

- parameters or buffers on the meta device have no values (export traces them happily, the conversion then
  fails deep inside with an AttributeError);
- quantised modules (``quantize_dynamic``'s Linear, static quantised convs) compute with packed int8 kernels
  that export does not capture as ATen float ops, and DeepLIFT has no differences to scale in int8 anyway;
- the model must run on rows of the background's shapes and dtypes at all: a feature count that differs from
  the model's is a mistake in the data, and torch's own message ("mat1 and mat2 shapes cannot be multiplied",
  "reduction dim ...") does not say that the background is what does not fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from converters.errors import ConversionError


class UnsupportedModelError(ConversionError):
    """The model as given cannot be converted (meta tensors, quantised modules); the message says which part."""


class ModelInputError(ConversionError):
    """The model does not run on rows of the given shapes and dtypes."""


def check_tensors_have_values(model: torch.nn.Module) -> None:
    meta = [
        name
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
        if tensor is not None and tensor.device.type == "meta"
    ]
    if meta:
        raise UnsupportedModelError(
            f"{len(meta)} parameter(s)/buffer(s) are on the meta device (shapes without values), first "
            f"{meta[0]!r}: load or initialise the weights (model.to_empty(device='cpu') then load_state_dict) first"
        )


def check_not_quantised(model: torch.nn.Module) -> None:
    for path, module in model.named_modules():
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        packed = hasattr(module, "_packed_params") or ".quantized" in kind or ".qat" in kind.split(".nn.")[0]
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if packed or any(t.is_quantized for t in tensors):
            raise UnsupportedModelError(
                f"module {path or '<root>'!r} [{kind}] is quantised: its int8 kernels are not float ops that "
                "torch.export captures or that DeepLIFT can attribute; explain the float model (before "
                "torch.ao.quantization.quantize_dynamic / convert)"
            )


def check_runs(model: torch.nn.Module, examples: Sequence[torch.Tensor], eval_mode) -> None:
    """Run the model eagerly on one row; a failure names the rows' shapes and dtypes beside torch's reason."""
    rows = [x[:1] for x in examples]
    try:
        with torch.no_grad(), eval_mode(model, warn=False):
            model(*rows)
    except Exception as error:  # whatever the model raises on these rows
        shapes = ", ".join(f"input {i}: rows of shape {tuple(x.shape[1:])} {x.dtype}" for i, x in enumerate(examples))
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelInputError(
            f"the model does not run on rows like the background's ({shapes}): {type(error).__name__}: {first}. "
            "Check that the background has the model's feature count, shapes and dtypes."
        ) from error
