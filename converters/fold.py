"""Eval-mode BatchNorm folded into the convolution before it: a graph rewrite, exact up to float rounding.

``y = BN(conv(x, W) + b)`` with running statistics is ``conv(x, W * s) + (b - mean) * s + beta`` for the
per-output-channel scale ``s = gamma / sqrt(var + eps)``: one convolution instead of a convolution and an
elementwise pass over its output (forward and backward), and for DeepLIFT one linear op fewer. The folded step
takes the BatchNorm node's name and provenance and returns what the BatchNorm node returns, so every later node
(and the conversion check, node by node against torch) sees the same values; the convolution node is no longer
computed on its own, so the check has no value of its to compare (it compares the BatchNorm's output, which
includes it).

The folded weights are computed inside the converted function from the parameters it is given (a product of
weights, not of activations), so they can never go stale against the parameters; under ``jax.jit`` with the
parameters bound they are constants.

Folded only where it is exact:
- the BatchNorm uses running statistics (``_native_batch_norm_legit_no_training``: torch's eval mode with
  ``track_running_stats``); batch statistics (training mode, ``track_running_stats=False``) are never folded;
- its input is a non-transposed convolution whose output nothing else reads (not another op, not a graph
  output);
- the convolution's weight and bias and the BatchNorm's weight, bias and statistics are all lifted parameters or
  buffers (or absent): values that do not depend on the model's inputs;
- the convolution's weight is float32 or float64 (a half-precision weight times the scale would round where
  torch's BatchNorm computes in float32);
- only the BatchNorm's first output (the normalised tensor) is read.
Interim-layer cuts (``converters.interim``) use the graph as exported, so a layer inside a folded pair (the
convolution, or the BatchNorm's input) can still be explained.
"""

from __future__ import annotations

import operator

import jax.numpy as jnp
import torch
import torch.fx

from converters.ops.conv import convolution
from converters.provenance import op_name

_CONVOLUTIONS = {"aten.conv1d.default", "aten.conv2d.default", "aten.conv3d.default", "aten.convolution.default"}
_BATCH_NORM = "aten._native_batch_norm_legit_no_training.default"
_FOLDABLE_DTYPES = (torch.float32, torch.float64)


def conv_arguments(node: torch.fx.Node) -> dict:
    """The convolution's arguments by name, as ``aten.convolution`` takes them (conv1d/2d/3d have defaults)."""
    names = ("x", "weight", "bias", "stride", "padding", "dilation", "groups")
    if op_name(node.target) == "aten.convolution.default":
        names = ("x", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding", "groups")
    values = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "transposed": False}
    values.update(dict(zip(names, node.args)))
    values.update(node.kwargs)
    return values


def foldable_pairs(graph: torch.fx.Graph, constant_names: set[str], weights: dict) -> dict[str, str]:
    """BatchNorm node name -> the name of the convolution node folded into it (see the module's conditions).
    ``constant_names``: the placeholders of lifted parameters, buffers and constants; ``weights``: their
    tensors (for the dtype)."""
    outputs = {n for node in graph.nodes if node.op == "output" for n in node.all_input_nodes}

    def constant(value) -> bool:
        return value is None or (
            isinstance(value, torch.fx.Node) and value.op == "placeholder" and value.name in constant_names
        )

    pairs = {}
    for bn in graph.nodes:
        if bn.op != "call_function" or op_name(bn.target) != _BATCH_NORM or bn.kwargs:
            continue
        conv, bn_weight, bn_bias, mean, var = bn.args[:5]
        if not (isinstance(conv, torch.fx.Node) and conv.op == "call_function"):
            continue
        if op_name(conv.target) not in _CONVOLUTIONS or conv in outputs or list(conv.users) != [bn]:
            continue
        arguments = conv_arguments(conv)
        if arguments["transposed"]:
            continue
        weight = arguments["weight"]
        if not all(constant(v) for v in (weight, arguments["bias"], bn_weight, bn_bias, mean, var)):
            continue
        if weight is None or mean is None or var is None or weights[weight.name].dtype not in _FOLDABLE_DTYPES:
            continue
        readers = list(bn.users)
        if bn in outputs or not all(u.target is operator.getitem and u.args[1] == 0 for u in readers):
            continue
        pairs[bn.name] = conv.name
    return pairs


def conv_batch_norm(conv_args: dict, bn_weight, bn_bias, running_mean, running_var, momentum, eps):
    """The convolution with the BatchNorm folded into its weight and bias; BatchNorm's three outputs (the
    statistics are empty, as ``_native_batch_norm_legit_no_training``'s are)."""
    weight, x = conv_args["weight"], conv_args["x"]
    dtype = jnp.promote_types(x.dtype, weight.dtype)  # a float64 run of float32 weights folds in float64
    weight = weight.astype(dtype)
    scale = jnp.reciprocal(jnp.sqrt(jnp.asarray(running_var, dtype) + eps))
    if bn_weight is not None:
        scale = scale * jnp.asarray(bn_weight, dtype)
    folded_weight = weight * jnp.reshape(scale, (-1,) + (1,) * (weight.ndim - 1))
    bias = conv_args["bias"]
    mean = jnp.asarray(running_mean, dtype)
    shift = -mean if bias is None else jnp.asarray(bias, dtype) - mean
    folded_bias = shift * scale
    if bn_bias is not None:
        folded_bias = folded_bias + jnp.asarray(bn_bias, dtype)
    y = convolution(
        x,
        folded_weight,
        folded_bias,
        conv_args["stride"],
        conv_args["padding"],
        conv_args["dilation"],
        False,
        0,
        conv_args["groups"],
    )
    empty = jnp.zeros((0,), y.dtype)
    return y, empty, empty
