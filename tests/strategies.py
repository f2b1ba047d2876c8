"""Hypothesis strategies for small random torch nets, and the builder that turns a drawn spec into a model.

A net is drawn as a ``NetSpec`` (plain frozen data, so hypothesis can shrink it and print it), then built by
``RandomNet``, whose ``forward`` interprets the spec. Every module the spec asks for is a child of one of two
``nn.ModuleDict``s (``layers``: used once; ``shared``: one instance per activation type, called by every site
that draws the "shared" style), so no module object is registered under two paths: the hook-based references
would hook it twice.

Inputs: a vector of 4-8 features or a 1x6x6 image. Blocks (1-4, widths 3-8), image blocks first, then a
flatten and vector blocks, then a Linear head to 1-3 outputs, optionally followed by a softmax over them:

- image: conv (+BatchNorm2d) + activation, residual conv, channel concatenation of two conv branches, pooling
  (MaxPool2d / AvgPool2d modules or F.max_pool2d / F.avg_pool2d), BatchNorm2d;
- vector: dense (+BatchNorm1d) + activation, residual, concatenation of two branches, max over a feature split
  (nn.MaxPool1d, amax over pairs, torch.maximum of halves), LayerNorm, BatchNorm1d, a gate a * act(b), a tiny
  single-head attention softmax(q k^T / sqrt(d)) v over a 2-3 step sequence made by reshaping the features,
  and two activations in a row.

Every activation (ReLU, LeakyReLU, ELU, Sigmoid, Tanh, Softplus, GELU, SiLU) is called in one of three
styles: its own module used once, functionally (torch.relu, F.gelu ...), or through the one shared instance.

``hook_safe=True`` draws only nets on which shap's module hooks are exact (every nonlinearity a module of a
type shap has a rule for, called once; no LayerNorm, products, attention or functional nonlinearities);
``safe_references(spec)`` says which references (shap, Captum) a spec is safe for and with which xshap rule
set to compare.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

ACTIVATIONS = ("relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu", "silu")
STYLES = ("module", "functional", "shared")
# the parameter each activation can be drawn with (first: the default, which shared instances use)
PARAMS: dict[str, tuple] = {
    "leaky_relu": (0.01, 0.2),
    "elu": (1.0, 0.5),
    "softplus": (1.0, 2.0),
    "gelu": ("none", "tanh"),
}

# module types each reference hooks with a rule of its own (shap 0.51 op_handler, Captum 0.9 SUPPORTED_NON_LINEAR)
SHAP_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu"})
CAPTUM_ACTIVATIONS = frozenset({"relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus"})
HOOK_SAFE_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a in SHAP_ACTIVATIONS)

IMAGE_SHAPE = (1, 6, 6)
VECTOR_KINDS = ("dense", "residual", "concat", "featmax", "layernorm", "batchnorm", "gate", "attention", "stacked")
IMAGE_KINDS = ("conv", "conv_residual", "conv_concat", "pool", "batchnorm2d")
HOOK_SAFE_VECTOR_KINDS = ("dense", "residual", "concat", "featmax", "batchnorm", "stacked")
FEATMAX_OPTIONS = ("maxpool1d", "amax", "maximum")
POOL_OPTIONS = ("maxpool", "avgpool", "f_maxpool", "f_avgpool")
HOOK_SAFE_POOL_OPTIONS = ("maxpool", "avgpool", "f_avgpool")  # F.avg_pool2d is linear: no hook needed


@dataclass(frozen=True)
class Act:
    kind: str  # one of ACTIVATIONS, or "softmax" (heads and attention only)
    style: str = "module"  # "module" (own instance, used once) | "functional" | "shared"
    param: object = None  # negative slope, alpha, beta or GELU's approximation; None: the default

    def __str__(self) -> str:
        param = "" if self.param in (None, PARAMS.get(self.kind, (None,))[0]) else f"({self.param})"
        return f"{self.kind}{param}[{self.style}]"


@dataclass(frozen=True)
class Block:
    kind: str
    width: int = 0  # output features / channels (first branch for concatenations)
    width2: int = 0  # concatenation: the second branch; attention: the sequence length
    acts: tuple[Act, ...] = ()
    option: str = ""  # pooling variant, "bn", kernel size, attention softmax style

    def __str__(self) -> str:
        parts = [self.kind]
        if self.width:
            parts.append(f"w={self.width}" + (f"+{self.width2}" if self.width2 else ""))
        if self.option:
            parts.append(self.option)
        parts += [str(a) for a in self.acts]
        return " ".join(parts)


@dataclass(frozen=True)
class NetSpec:
    input_shape: tuple[int, ...]
    image_blocks: tuple[Block, ...]
    vector_blocks: tuple[Block, ...]
    n_out: int
    head: Act | None  # a softmax over the outputs
    seed: int
    gain: float  # Linear/Conv weights scaled by it: the nonlinearities work away from their linear part
    n_background: int
    n_explained: int
    ill: str = ""  # an ill-conditioned part before the head (ILL_CONDITIONED); "" for none
    homogeneous: bool = False  # every bias 0: with ReLU-like activations only, f(c x) = c f(x) for c > 0

    @property
    def image(self) -> bool:
        return len(self.input_shape) == 3

    def acts(self) -> list[Act]:
        found = [a for b in (*self.image_blocks, *self.vector_blocks) for a in b.acts]
        return found + ([self.head] if self.head is not None else [])

    def shared_uses(self) -> dict[str, int]:
        uses: dict[str, int] = {}
        for act in self.acts():
            if act.style == "shared":
                uses[act.kind] = uses.get(act.kind, 0) + 1
        return uses

    def __str__(self) -> str:
        blocks = [str(b) for b in self.image_blocks] + (["flatten"] if self.image else [])
        blocks += [str(b) for b in self.vector_blocks]
        head = f"linear({self.n_out})" + (f" -> {self.head}" if self.head else "")
        blocks += [f"ill({self.ill})"] if self.ill else []
        return (
            f"NetSpec(in={self.input_shape}, seed={self.seed}, gain={self.gain}, B={self.n_background}, "
            f"N={self.n_explained}{', no biases' if self.homogeneous else ''}: {' -> '.join([*blocks, head])})"
        )


# -- the model ------------------------------------------------------------------------------------------------
def activation_module(act: Act) -> nn.Module:
    param = act.param if act.param is not None else PARAMS.get(act.kind, (None,))[0]
    return {
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(param),
        "elu": lambda: nn.ELU(alpha=param),
        "sigmoid": lambda: nn.Sigmoid(),
        "tanh": lambda: nn.Tanh(),
        "softplus": lambda: nn.Softplus(beta=param),
        "gelu": lambda: nn.GELU(approximate=param),
        "silu": lambda: nn.SiLU(),
        "softmax": lambda: nn.Softmax(dim=-1),
    }[act.kind]()


def functional_activation(act: Act, h: torch.Tensor) -> torch.Tensor:
    param = act.param if act.param is not None else PARAMS.get(act.kind, (None,))[0]
    if act.kind == "relu":
        return torch.relu(h)
    if act.kind == "leaky_relu":
        return F.leaky_relu(h, param)
    if act.kind == "elu":
        return F.elu(h, alpha=param)
    if act.kind == "sigmoid":
        return torch.sigmoid(h)
    if act.kind == "tanh":
        return torch.tanh(h)
    if act.kind == "softplus":
        return F.softplus(h, beta=param)
    if act.kind == "gelu":
        return F.gelu(h, approximate=param)
    if act.kind == "silu":
        return F.silu(h)
    if act.kind == "softmax":
        return F.softmax(h, dim=-1)
    raise ValueError(act.kind)


class RandomNet(nn.Module):
    """The torch model of a NetSpec: ``forward`` interprets the spec's blocks."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.layers = nn.ModuleDict()
        self.shared = nn.ModuleDict()
        with torch.random.fork_rng():
            torch.manual_seed(spec.seed)
            shape = spec.input_shape
            for i, block in enumerate(spec.image_blocks):
                shape = self._build_image(f"i{i}_", block, shape)
            width = math.prod(shape)
            for i, block in enumerate(spec.vector_blocks):
                width = self._build_vector(f"v{i}_", block, width)
            if spec.ill in ("ratio", "root"):
                self.layers["ill_a"] = nn.Linear(width, width)
                self.layers["ill_b"] = nn.Linear(width, width)
            self.layers["head"] = nn.Linear(width, spec.n_out)
            if spec.head is not None:
                self._build_act("head_act", spec.head)
        self._randomize(spec.seed)
        self.eval()

    # -- construction -------------------------------------------------------------------------------------
    def _build_act(self, name: str, act: Act) -> None:
        if act.style == "module":
            self.layers[name] = activation_module(act)
        elif act.style == "shared" and act.kind not in self.shared:
            self.shared[act.kind] = activation_module(Act(act.kind))

    def _build_acts(self, prefix: str, block: Block) -> None:
        for j, act in enumerate(block.acts):
            self._build_act(f"{prefix}act{j}", act)

    def _build_image(self, p: str, block: Block, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        kind, L = block.kind, self.layers
        self._build_acts(p, block)
        if kind == "conv":
            k = 1 if "k1" in block.option else 3
            L[p + "conv"] = nn.Conv2d(c, block.width, k, padding=k // 2)
            if "bn" in block.option:
                L[p + "bn"] = nn.BatchNorm2d(block.width)
            return block.width, h, w
        if kind == "conv_residual":
            L[p + "conv"] = nn.Conv2d(c, c, 3, padding=1)
            return shape
        if kind == "conv_concat":
            L[p + "conv_a"] = nn.Conv2d(c, block.width, 3, padding=1)
            L[p + "conv_b"] = nn.Conv2d(c, block.width2, 1)
            return block.width + block.width2, h, w
        if kind == "pool":
            if block.option == "maxpool":
                L[p + "pool"] = nn.MaxPool2d(2)
            elif block.option == "avgpool":
                L[p + "pool"] = nn.AvgPool2d(2)
            return c, h // 2, w // 2
        if kind == "batchnorm2d":
            L[p + "bn"] = nn.BatchNorm2d(c)
            return shape
        raise ValueError(kind)

    def _build_vector(self, p: str, block: Block, width: int) -> int:
        kind, L = block.kind, self.layers
        self._build_acts(p, block)
        if kind in ("dense", "stacked"):
            L[p + "fc"] = nn.Linear(width, block.width)
            if block.option == "bn":
                L[p + "bn"] = nn.BatchNorm1d(block.width)
            return block.width
        if kind == "residual":
            L[p + "fc"] = nn.Linear(width, width)
            return width
        if kind == "concat":
            L[p + "fc_a"] = nn.Linear(width, block.width)
            L[p + "fc_b"] = nn.Linear(width, block.width2)
            return block.width + block.width2
        if kind == "featmax":
            if block.option == "maxpool1d":
                L[p + "pool"] = nn.MaxPool1d(2)
            return width // 2
        if kind == "layernorm":
            L[p + "norm"] = nn.LayerNorm(width)
            return width
        if kind == "batchnorm":
            L[p + "bn"] = nn.BatchNorm1d(width)
            return width
        if kind == "gate":
            L[p + "fc_a"] = nn.Linear(width, block.width)
            L[p + "fc_b"] = nn.Linear(width, block.width)
            return block.width
        if kind == "attention":
            seq, dim = block.width2, block.width
            L[p + "fc"] = nn.Linear(width, seq * dim)
            for name in ("q", "k", "v"):
                L[p + name] = nn.Linear(dim, dim)
            if block.option == "module":
                L[p + "softmax"] = nn.Softmax(dim=-1)
            return seq * dim
        raise ValueError(kind)

    def _randomize(self, seed: int) -> None:
        """Scale Linear/Conv weights by the gain; give every norm random affine parameters (and BatchNorm random
        running statistics), so no norm is the identity."""
        gen = torch.Generator().manual_seed(seed + 7)
        with torch.no_grad():
            if self.spec.ill == "logits":  # logits of ~1e4 that differ by little: a softmax head in float32
                self.layers["head"].weight.mul_(1e3)
                self.layers["head"].bias.add_(1e4)
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Conv2d)):
                    module.weight.mul_(self.spec.gain)
                elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                    n = module.num_features
                    module.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                    module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                    module.weight.copy_(0.8 + 0.6 * torch.rand(n, generator=gen))
                    module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                elif isinstance(module, nn.LayerNorm):
                    n = module.normalized_shape[0]
                    module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                    module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                if self.spec.homogeneous and getattr(module, "bias", None) is not None:
                    module.bias.zero_()

    # -- evaluation ---------------------------------------------------------------------------------------
    def _act(self, name: str, act: Act, h: torch.Tensor) -> torch.Tensor:
        if act.style == "module":
            return self.layers[name](h)
        if act.style == "shared":
            return self.shared[act.kind](h)
        return functional_activation(act, h)

    def _acts(self, p: str, block: Block, h: torch.Tensor, first: int = 0) -> torch.Tensor:
        for j, act in enumerate(block.acts[first:], start=first):
            h = self._act(f"{p}act{j}", act, h)
        return h

    def _image(self, p: str, block: Block, h: torch.Tensor) -> torch.Tensor:
        kind, L = block.kind, self.layers
        if kind == "conv":
            z = L[p + "conv"](h)
            if "bn" in block.option:
                z = L[p + "bn"](z)
            return self._acts(p, block, z)
        if kind == "conv_residual":
            return h + self._acts(p, block, L[p + "conv"](h))
        if kind == "conv_concat":
            return torch.cat([self._acts(p, block, L[p + "conv_a"](h)), L[p + "conv_b"](h)], dim=1)
        if kind == "pool":
            if block.option == "f_maxpool":
                return F.max_pool2d(h, 2)
            if block.option == "f_avgpool":
                return F.avg_pool2d(h, 2)
            return L[p + "pool"](h)
        if kind == "batchnorm2d":
            return L[p + "bn"](h)
        raise ValueError(kind)

    def _vector(self, p: str, block: Block, h: torch.Tensor) -> torch.Tensor:
        kind, L = block.kind, self.layers
        if kind in ("dense", "stacked"):
            z = L[p + "fc"](h)
            if block.option == "bn":
                z = L[p + "bn"](z)
            return self._acts(p, block, z)
        if kind == "residual":
            return h + self._acts(p, block, L[p + "fc"](h))
        if kind == "concat":
            return torch.cat([self._acts(p, block, L[p + "fc_a"](h)), L[p + "fc_b"](h)], dim=1)
        if kind == "featmax":
            k = h.shape[1] // 2
            if block.option == "maxpool1d":
                return L[p + "pool"](h.unsqueeze(1)).squeeze(1)
            if block.option == "amax":
                return h[:, : 2 * k].reshape(h.shape[0], k, 2).amax(dim=-1)
            return torch.maximum(h[:, :k], h[:, k : 2 * k])
        if kind == "layernorm":
            return L[p + "norm"](h)
        if kind == "batchnorm":
            return L[p + "bn"](h)
        if kind == "gate":
            return L[p + "fc_a"](h) * self._acts(p, block, L[p + "fc_b"](h))
        if kind == "attention":
            seq, dim = block.width2, block.width
            tokens = L[p + "fc"](h).reshape(h.shape[0], seq, dim)
            q, k, v = (L[p + name](tokens) for name in ("q", "k", "v"))
            scores = q @ k.transpose(1, 2) / math.sqrt(dim)
            weights = L[p + "softmax"](scores) if block.option == "module" else F.softmax(scores, dim=-1)
            return (weights @ v).reshape(h.shape[0], seq * dim)
        raise ValueError(kind)

    def forward(self, x):
        h = x
        for i, block in enumerate(self.spec.image_blocks):
            h = self._image(f"i{i}_", block, h)
        if self.spec.image:
            h = h.flatten(1)
        for i, block in enumerate(self.spec.vector_blocks):
            h = self._vector(f"v{i}_", block, h)
        h = _ILL_CONDITIONED[self.spec.ill](self.layers, h)
        h = self.layers["head"](h)
        if self.spec.head is not None:
            h = self._act("head_act", self.spec.head, h)
        return h


# the ill-conditioned parts a net can end with, before its head (each keeps the width)
_ILL_CONDITIONED = {
    "": lambda layers, h: h,
    "logits": lambda layers, h: h,  # the head's weights are scaled instead (RandomNet._randomize)
    # a quotient whose divisor passes near 0: a / (b * 1e-3 + 1e-6)
    "ratio": lambda layers, h: layers["ill_a"](h) / (layers["ill_b"](h) * 1e-3 + 1e-6),
    # a root of values near 0: sqrt(|a| * 1e-6 + 1e-12)
    "root": lambda layers, h: torch.sqrt(torch.abs(layers["ill_a"](h)) * 1e-6 + 1e-12) * 1e3 + layers["ill_b"](h),
}
ILL_CONDITIONED = tuple(kind for kind in _ILL_CONDITIONED if kind)


def build(spec: NetSpec, dtype=torch.float32) -> tuple[RandomNet, torch.Tensor, torch.Tensor]:
    """The model (eval mode), the background (B rows) and the explained rows (N), all of ``dtype``."""
    model = RandomNet(spec).to(dtype)
    rng = np.random.default_rng(spec.seed + 1)
    background = rng.standard_normal((spec.n_background, *spec.input_shape))
    X = 1.5 * rng.standard_normal((spec.n_explained, *spec.input_shape))
    return model, torch.tensor(background, dtype=dtype), torch.tensor(X, dtype=dtype)


# -- what the references handle exactly ----------------------------------------------------------------------
def _captum_adjacent(spec: NetSpec) -> bool:
    """Two Captum-hooked nonlinear modules where one's output is the other's input tensor (captum #1104)."""

    uses = spec.shared_uses()

    def hooked(act: Act) -> bool:  # a module Captum hooks, called once (a shared instance may be called once)
        once = act.style == "module" or (act.style == "shared" and uses[act.kind] == 1)
        return once and act.kind in CAPTUM_ACTIVATIONS

    previous_out_hooked = False  # the previous block's output is a hooked module's output tensor
    for block in spec.image_blocks:
        if block.kind == "pool" and block.option == "maxpool" and previous_out_hooked:
            return True
        if block.kind == "conv":
            previous_out_hooked = bool(block.acts) and hooked(block.acts[-1])
        elif block.kind == "pool":
            previous_out_hooked = block.option == "maxpool"
        else:
            previous_out_hooked = False
    for block in spec.vector_blocks:  # (the flatten and nn.MaxPool1d's unsqueeze put a view in between)
        if block.kind == "stacked" and hooked(block.acts[0]) and hooked(block.acts[1]):
            return True
    return False


def unsafe_reasons(spec: NetSpec, reference: str) -> list[str]:
    """Why ``reference``'s module hooks can be wrong on this net (empty: its rules apply exactly).

    A softmax head module is not listed for shap: its rule there is complete, only not the complete rules'
    split (compare with rules="shap"); for Captum it is listed (its softmax rule is not complete).
    """
    table = SHAP_ACTIVATIONS if reference == "shap" else CAPTUM_ACTIVATIONS
    uses = spec.shared_uses()
    reasons = []
    for act in spec.acts():
        if act.kind == "softmax":
            continue
        if act.style == "functional":
            reasons.append(f"functional {act.kind}")
        elif act.kind not in table:
            reasons.append(f"no rule for {act.kind}")
        elif act.style == "shared" and uses[act.kind] > 1:
            reasons.append(f"shared {act.kind} used {uses[act.kind]} times")
    for block in (*spec.image_blocks, *spec.vector_blocks):
        if block.kind in ("layernorm", "gate", "attention"):
            reasons.append(block.kind)
        if block.kind == "featmax" and block.option != "maxpool1d":
            reasons.append(f"functional {block.option}")
        if block.kind == "pool" and block.option == "f_maxpool":
            reasons.append("functional max_pool2d")
    if spec.head is not None and (spec.head.style == "functional" or reference == "captum"):
        reasons.append(f"{spec.head.style} softmax head")
    if reference == "captum" and _captum_adjacent(spec):
        reasons.append("adjacent hooked modules (captum #1104)")
    return reasons


def safe_references(spec: NetSpec) -> dict[str, str]:
    """reference -> the xshap rule set its values should equal, for each reference that is exact on ``spec``."""
    safe = {}
    if not unsafe_reasons(spec, "shap"):
        safe["shap"] = "shap" if spec.head is not None else "complete"
    if not unsafe_reasons(spec, "captum"):
        safe["captum"] = "complete"
    return safe


# -- strategies -----------------------------------------------------------------------------------------------
widths = st.integers(3, 8)


@st.composite
def activations(draw, kinds=ACTIVATIONS, styles=STYLES, shared_kind: str | None = None) -> Act:
    """An activation call. ``shared_kind``: the type every "shared" call of the net gets, so that the shared
    instance is often called several times (otherwise two shared calls of the same type would be rare)."""
    style = draw(st.sampled_from(styles))
    if style == "shared" and shared_kind is not None:
        return Act(shared_kind, style)
    kind = draw(st.sampled_from(kinds))
    if style == "shared" or kind not in PARAMS:  # a shared instance has the default parameter
        return Act(kind, style)
    return Act(kind, style, draw(st.sampled_from(PARAMS[kind])))


@st.composite
def image_block(draw, shape, act, hook_safe: bool) -> Block:
    _, h, _ = shape
    kinds = [k for k in IMAGE_KINDS if k != "pool" or h >= 2]
    kind = draw(st.sampled_from(kinds))
    if kind == "conv":
        option = draw(st.sampled_from(("k3", "k1", "k3 bn", "k1 bn")))
        acts = tuple(draw(st.lists(act, max_size=1)))
        return Block(kind, draw(widths), acts=acts, option=option)
    if kind == "conv_residual":
        return Block(kind, acts=(draw(act),))
    if kind == "conv_concat":
        return Block(kind, draw(st.integers(2, 5)), draw(st.integers(1, 4)), acts=(draw(act),))
    if kind == "pool":
        return Block(kind, option=draw(st.sampled_from(HOOK_SAFE_POOL_OPTIONS if hook_safe else POOL_OPTIONS)))
    return Block(kind)


def _image_shape(block: Block, shape):
    c, h, w = shape
    if block.kind == "conv":
        return block.width, h, w
    if block.kind == "conv_concat":
        return block.width + block.width2, h, w
    if block.kind == "pool":
        return c, h // 2, w // 2
    return shape


@st.composite
def vector_block(draw, width: int, act, hook_safe: bool) -> Block:
    kinds = HOOK_SAFE_VECTOR_KINDS if hook_safe else VECTOR_KINDS
    kind = draw(st.sampled_from([k for k in kinds if k != "featmax" or width >= 2]))
    if kind == "dense":
        acts = tuple(draw(st.lists(act, max_size=1)))
        return Block(kind, draw(widths), acts=acts, option=draw(st.sampled_from(("", "bn"))))
    if kind == "stacked":
        return Block(kind, draw(widths), acts=(draw(act), draw(act)))
    if kind == "residual":
        return Block(kind, acts=(draw(act),))
    if kind == "concat":
        return Block(kind, draw(st.integers(2, 5)), draw(st.integers(1, 4)), acts=(draw(act),))
    if kind == "featmax":
        return Block(kind, option=draw(st.sampled_from(("maxpool1d",) if hook_safe else FEATMAX_OPTIONS)))
    if kind == "gate":
        return Block(kind, draw(widths), acts=(draw(act),))
    if kind == "attention":  # width: the head dimension, width2: the sequence length
        dim, seq = draw(st.integers(2, 4)), draw(st.integers(2, 3))
        return Block(kind, dim, seq, option=draw(st.sampled_from(("module", "functional"))))
    return Block(kind)


def _vector_width(block: Block, width: int) -> int:
    if block.kind in ("dense", "stacked", "gate"):
        return block.width
    if block.kind == "concat":
        return block.width + block.width2
    if block.kind == "featmax":
        return width // 2
    if block.kind == "attention":
        return block.width * block.width2
    return width


@st.composite
def nets(draw, hook_safe: bool = False) -> NetSpec:
    """A NetSpec. ``hook_safe``: only module activations shap hooks (each used once), no LayerNorm, products,
    attention or functional max; Captum may still be unsafe on it (GELU, adjacent hooked modules, softmax head):
    see ``safe_references``."""
    if hook_safe:
        act = activations(HOOK_SAFE_ACTIVATIONS, ("module",))
    else:
        # the styles this net's calls draw from: mixed, or one style throughout (a net of shared calls reuses its
        # shared instance whenever it has two activation calls)
        styles = draw(st.sampled_from((STYLES, ("shared",), ("module",), ("functional",))))
        act = activations(ACTIVATIONS, styles, shared_kind=draw(st.sampled_from(ACTIVATIONS)))
    image = draw(st.booleans())
    depth = draw(st.integers(1, 4))
    if image:
        input_shape = IMAGE_SHAPE
        n_image = draw(st.integers(1, depth))
    else:
        input_shape = (draw(st.integers(4, 8)),)
        n_image = 0
    image_blocks, vector_blocks = [], []
    shape = input_shape
    for _ in range(n_image):
        block = draw(image_block(shape, act, hook_safe))
        image_blocks.append(block)
        shape = _image_shape(block, shape)
    width = math.prod(shape)
    for _ in range(depth - n_image):
        block = draw(vector_block(width, act, hook_safe))
        vector_blocks.append(block)
        width = _vector_width(block, width)
    n_out = draw(st.integers(1, 3))
    head = None
    if n_out >= 2 and draw(st.booleans()):
        head = Act("softmax", draw(st.sampled_from(("module",) if hook_safe else ("module", "functional"))))
    return NetSpec(
        input_shape=input_shape,
        image_blocks=tuple(image_blocks),
        vector_blocks=tuple(vector_blocks),
        n_out=n_out,
        head=head,
        seed=draw(st.integers(0, 2**16)),
        gain=draw(st.sampled_from((1.0, 2.0))),
        n_background=draw(st.integers(4, 6)),
        n_explained=draw(st.integers(2, 3)),
    )


@st.composite
def ill_conditioned_nets(draw) -> NetSpec:
    """A drawn net ending in an ill-conditioned part: large logits before a softmax, a divisor near 0, a root
    near 0 (or none, one draw in four)."""
    spec = draw(nets())
    ill = draw(st.sampled_from(("", *ILL_CONDITIONED)))
    head = Act("softmax", "functional") if ill == "logits" else spec.head
    n_out = max(spec.n_out, 2) if ill == "logits" else spec.n_out
    return dataclasses.replace(spec, ill=ill, head=head, n_out=n_out)


HOMOGENEOUS_ACTIVATIONS = ("relu", "leaky_relu")
HOMOGENEOUS_VECTOR_KINDS = ("dense", "residual", "concat", "featmax", "stacked")
HOMOGENEOUS_IMAGE_KINDS = ("conv", "conv_residual", "conv_concat", "pool")


@st.composite
def homogeneous_nets(draw) -> NetSpec:
    """A positively homogeneous net: no biases, ReLU / LeakyReLU, max / average pooling, residuals and
    concatenations; no norms (they shift), products or softmax. f(c x) = c f(x), and so do its attributions."""
    spec = draw(nets())

    def keep(block: Block, kinds) -> bool:
        return block.kind in kinds and "bn" not in block.option

    image = tuple(b for b in spec.image_blocks if keep(b, HOMOGENEOUS_IMAGE_KINDS))
    vector = tuple(b for b in spec.vector_blocks if keep(b, HOMOGENEOUS_VECTOR_KINDS))
    acts = draw(st.lists(st.sampled_from(HOMOGENEOUS_ACTIVATIONS), min_size=1, max_size=1))[0]

    def relu_like(block: Block) -> Block:
        return dataclasses.replace(
            block,
            acts=tuple(Act(acts if a.kind not in HOMOGENEOUS_ACTIVATIONS else a.kind, a.style) for a in block.acts),
        )

    return dataclasses.replace(
        spec,
        image_blocks=tuple(relu_like(b) for b in image),
        vector_blocks=tuple(relu_like(b) for b in _fit_widths(vector, spec, image)),
        head=None,
        homogeneous=True,
    )


def _fit_widths(vector: tuple[Block, ...], spec: NetSpec, image: tuple[Block, ...]) -> tuple[Block, ...]:
    """Vector blocks whose widths no longer follow from a dropped block still build: only the kinds that keep or
    set their own width survive, and featmax needs an even input (rebuilt from the input shape)."""
    shape = spec.input_shape
    for block in image:
        shape = _image_shape(block, shape)
    width, kept = math.prod(shape), []
    for block in vector:
        if block.kind == "featmax" and width < 2:
            continue
        kept.append(block)
        width = _vector_width(block, width)
    return tuple(kept)
