"""The benchmark workloads (issue 4): models with fixed-seed untrained weights, and fixed-seed data.

W1  the seed MLP (``xshap.seed.sequential_test_net``: 16 -> 32 -> 32 -> 1), N=1000 explained rows, B=100
    background rows, 1 output.
W2  an MNIST-size CNN (conv 32, conv 64, maxpool, fc 128, fc 10 on 1x28x28), N=100, B=50, all 10 outputs.
W3  a small transformer encoder: torch's ``nn.TransformerEncoderLayer`` (d_model 64, 4 heads, feed-forward 128,
    no dropout, batch_first) on sequences of 32 vectors of size 64, mean over the sequence, Linear to 2 outputs;
    N=64, B=32.
W4  W1's model with N in {100, 1000, 10000} (B=100): one workload per N, named W4-N100, W4-N1000, W4-N10000.

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
    model: str  # "mlp", "cnn" or "encoder"
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
            raise SystemExit(f"unknown workload {name!r}; known: W1, W2, W3, W4 ({', '.join(table)})")
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


def build(spec: Spec) -> Workload:
    """The model (fixed seed, eval mode) and the rows of a workload."""
    import torch

    make, row_shape = MODELS[spec.model]
    torch.manual_seed(SEED)
    model = make().eval()
    rng = np.random.default_rng(SEED)

    def draw(n: int) -> np.ndarray:
        if spec.model == "cnn":  # pixel intensities
            return rng.uniform(0.0, 1.0, size=(n, *row_shape)).astype(np.float32)
        return rng.standard_normal((n, *row_shape)).astype(np.float32)

    background = draw(spec.b)
    X = draw(spec.n)
    with torch.no_grad():
        out = model(torch.from_numpy(X[:1]))
    n_outputs = int(np.prod(out.shape[1:])) if out.ndim > 1 else 1
    return Workload(spec, model, background, X, n_outputs)
