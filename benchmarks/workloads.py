"""The benchmark workloads (issue 4): models with fixed-seed untrained weights, and fixed-seed data.

W1  the seed MLP (``xshap.seed.sequential_test_net``: 16 -> 32 -> 32 -> 1), N=1000 explained rows, B=100
    background rows, 1 output.
W2  an MNIST-size CNN (conv 32, conv 64, maxpool, fc 128, fc 10 on 1x28x28), N=100, B=50, all 10 outputs.
W3  a small transformer encoder: torch's ``nn.TransformerEncoderLayer`` (d_model 64, 4 heads, feed-forward 128,
    no dropout, batch_first) on sequences of 32 vectors of size 64, mean over the sequence, Linear to 2 outputs;
    N=64, B=32.
W4  W1's model with N in {100, 1000, 10000} (B=100): one workload per N, named W4-N100, W4-N1000, W4-N10000.
W5  real architectures (issue 19; ``benchmarks.architectures``, torchvision's layer structure, random weights and
    BatchNorm statistics), 10 outputs, one workload each: W5-resnet18-64 and W5-resnet18-224 (ResNet-18 at
    3x64x64 and 3x224x224), W5-mobilenet-64 and W5-mobilenet-224 (MobileNetV3-small), W5-vit-32 (ViT-B/16 at
    3x32x32: 4 patches and the class token), W5-bert-64 (a BERT-base encoder on embeddings of a 64-token
    sequence, 2 outputs), W5-densenet-64 (DenseNet-121 at 3x64x64). N=4, B=8 (N=2, B=4 at 224). The image models
    with separate ReLU instances, so that shap and Captum can hook every call.

Timing does not depend on training, so every model is untrained; ``torch.manual_seed`` fixes its weights and
``numpy.random.default_rng`` its data, so every process (each implementation runs in its own) builds exactly the
same model and the same rows. ``quick=True`` gives tiny sizes of the same models, for smoke tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 0
W4_SIZES = (100, 1000, 10000)
W4_QUICK_SIZES = (8, 16, 32)


@dataclass(frozen=True)
class Spec:
    """What a workload is, without building anything (cheap, for the parent process)."""

    name: str
    model: str  # "mlp", "cnn", "encoder", or a W5 architecture "name@size" (see W5_MODELS)
    n: int  # explained rows
    b: int  # background rows
    description: str


@dataclass
class Workload:
    spec: Spec
    model: object  # torch.nn.Module in eval mode
    background: np.ndarray  # (B, *row_shape) float32
    X: np.ndarray  # (N, *row_shape) float32
    n_outputs: int


def specs(quick: bool = False) -> dict[str, Spec]:
    """Every workload by name, full or quick sizes."""
    if quick:
        sizes = {"W1": (16, 8), "W2": (2, 2), "W3": (2, 2)}
        w4 = W4_QUICK_SIZES
    else:
        sizes = {"W1": (1000, 100), "W2": (100, 50), "W3": (64, 32)}
        w4 = W4_SIZES
    out = {
        "W1": Spec("W1", "mlp", *sizes["W1"], "seed MLP 16-32-32-1"),
        "W2": Spec("W2", "cnn", *sizes["W2"], "MNIST CNN, 10 outputs"),
        "W3": Spec("W3", "encoder", *sizes["W3"], "TransformerEncoderLayer seq 32 d 64, 2 outputs"),
    }
    b4 = sizes["W1"][1]
    for n in w4:
        out[f"W4-N{n}"] = Spec(f"W4-N{n}", "mlp", n, b4, f"seed MLP, N={n}")
    for name, model, size, n, b in W5_QUICK if quick else W5:
        description = f"{W5_MODELS[model][1]} at {size}" + (" tokens" if model == "bert" else "")
        out[f"W5-{name}"] = Spec(f"W5-{name}", f"{model}@{size}", n, b, description)
    return out


def expand(names: list[str], quick: bool = False) -> list[Spec]:
    """Workload names as given on the command line ("W4" means all its sizes) -> specs, in order."""
    table = specs(quick)
    chosen: list[Spec] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        matches = [s for key, s in table.items() if key == name or key.startswith(name + "-")]
        if not matches:
            raise SystemExit(f"unknown workload {name!r}; known: W1, W2, W3, W4, W5 ({', '.join(table)})")
        chosen.extend(s for s in matches if s not in chosen)
    return chosen


# -- models --------------------------------------------------------------------------------------------------
def _mnist_cnn():
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _encoder():
    import torch
    import torch.nn as nn

    class EncoderClassifier(nn.Module):
        """nn.TransformerEncoderLayer on (N, 32, 64), mean over the sequence, Linear to 2 outputs."""

        def __init__(self):
            super().__init__()
            self.encoder = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
            self.head = nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(x).mean(dim=1))

    return EncoderClassifier()


def _mlp():
    from xshap.seed import sequential_test_net

    return sequential_test_net()


MODELS = {"mlp": (_mlp, (16,)), "cnn": (_mnist_cnn, (1, 28, 28)), "encoder": (_encoder, (32, 64))}

# -- W5: real architectures ----------------------------------------------------------------------------------
# name -> (factory of the image size or sequence length, description)
W5_MODELS = {
    "resnet18": (lambda size: _architecture("resnet18", separate_relus=True), "ResNet-18"),
    "mobilenet": (lambda size: _architecture("mobilenet_v3_small"), "MobileNetV3-small"),
    "densenet": (lambda size: _architecture("densenet121"), "DenseNet-121"),
    "vit": (lambda size: _architecture("vit_b_16", image_size=size), "ViT-B/16"),
    "bert": (lambda size: _architecture("bert_encoder", seq=size), "BERT-base encoder"),
}
# (workload name, model, image size or sequence length, N, B)
W5 = (
    ("resnet18-64", "resnet18", 64, 4, 8),
    ("resnet18-224", "resnet18", 224, 2, 4),
    ("mobilenet-64", "mobilenet", 64, 4, 8),
    ("mobilenet-224", "mobilenet", 224, 2, 4),
    ("vit-32", "vit", 32, 4, 8),
    ("bert-64", "bert", 64, 4, 8),
    ("densenet-64", "densenet", 64, 4, 8),
)
W5_QUICK = (("resnet18-32", "resnet18", 32, 1, 2), ("mobilenet-32", "mobilenet", 32, 1, 2))


def _architecture(name: str, **options):
    from benchmarks import architectures

    return getattr(architectures, name)(**options)


def w5_row_shape(model: str, size: int) -> tuple[int, ...]:
    return (size, 768) if model == "bert" else (3, size, size)


def w5_model(model: str, size: int, rows: int, seed: int = SEED):
    """A W5 architecture (eval mode, fixed seed) and ``rows`` rows for it: (model, X)."""
    import torch

    torch.manual_seed(seed)
    made = W5_MODELS[model][0](size).eval()
    X = np.random.default_rng(seed).standard_normal((rows, *w5_row_shape(model, size))).astype(np.float32)
    return made, X


def _factory(spec: Spec):
    if "@" not in spec.model:
        return MODELS[spec.model]
    model, size = spec.model.split("@")
    return (lambda: W5_MODELS[model][0](int(size))), w5_row_shape(model, int(size))


def build(spec: Spec) -> Workload:
    """The model (fixed seed, eval mode) and the rows of a workload."""
    import torch

    make, row_shape = _factory(spec)
    torch.manual_seed(SEED)
    model = make().eval()
    rng = np.random.default_rng(SEED)

    def draw(n: int) -> np.ndarray:
        if spec.model == "cnn":  # pixel intensities
            return rng.uniform(0.0, 1.0, size=(n, *row_shape)).astype(np.float32)
        return rng.standard_normal((n, *row_shape)).astype(np.float32)  # normalised images, embeddings

    background = draw(spec.b)
    X = draw(spec.n)
    with torch.no_grad():
        out = model(torch.from_numpy(X[:1]))
    n_outputs = int(np.prod(out.shape[1:])) if out.ndim > 1 else 1
    return Workload(spec, model, background, X, n_outputs)
