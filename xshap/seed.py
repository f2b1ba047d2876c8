"""The seed case of the bug report: one regression MLP (16 -> 32 -> 32 -> 1) written three ways.

shap's DeepExplainer applies DeepLIFT through module hooks, so it is right on the nn.Sequential net
and silently wrong on the other two: a functional relu gets no hook, and one nn.ReLU instance used
twice has its stored input overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

INPUT_SIZE = 16


class FunctionalTestNet(torch.nn.Module):
    """The activation is torch.nn.functional.relu, called after layer 1 and layer 2."""

    def __init__(self):
        super().__init__()
        self.layer_1 = torch.nn.Linear(INPUT_SIZE, 32)
        self.layer_2 = torch.nn.Linear(32, 32)
        self.layer_3 = torch.nn.Linear(32, 1)
        self.activation = torch.nn.functional.relu

    def forward(self, x):
        h = self.activation(self.layer_1(x))
        h = self.activation(self.layer_2(h))
        return self.layer_3(h)


class ModuleTestNet(torch.nn.Module):
    """One nn.ReLU instance, used after layer 1 and after layer 2."""

    def __init__(self):
        super().__init__()
        self.layer_1 = torch.nn.Linear(INPUT_SIZE, 32)
        self.layer_2 = torch.nn.Linear(32, 32)
        self.layer_3 = torch.nn.Linear(32, 1)
        self.activation = torch.nn.ReLU()

    def forward(self, x):
        h = self.activation(self.layer_1(x))
        h = self.activation(self.layer_2(h))
        return self.layer_3(h)


def sequential_test_net() -> torch.nn.Sequential:
    """The same MLP as nn.Sequential with two ReLU instances: the case shap handles correctly."""
    return torch.nn.Sequential(
        torch.nn.Linear(INPUT_SIZE, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 1),
    )


SEED_NETS = {
    "FunctionalTestNet": FunctionalTestNet,
    "ModuleTestNet": ModuleTestNet,
    "Sequential": sequential_test_net,
}


@dataclass
class SeedData:
    X_train: torch.Tensor  # 64 rows: the background
    X_test: torch.Tensor  # 36 rows: explained
    y_train: torch.Tensor
    y_test: torch.Tensor


def seed_data() -> SeedData:
    """make_regression(n_samples=100, n_features=16, noise=5.0, bias=25, random_state=0), 64/36 split."""
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=100, n_features=INPUT_SIZE, noise=5.0, bias=25, random_state=0)
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order].astype(np.float32), y[order].reshape(-1, 1).astype(np.float32)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    return SeedData(X_t[:64], X_t[64:], y_t[:64], y_t[64:])


def train(net: torch.nn.Module, data: SeedData, steps: int = 5000, seed: int = 0) -> torch.nn.Module:
    """Full-batch Adam (lr 1e-3) on the MSE, as in the bug report; returns the net in eval mode."""
    torch.manual_seed(seed)
    for parameter in net.parameters():  # a reproducible initialisation whatever was created before
        if parameter.ndim > 1:
            torch.nn.init.kaiming_uniform_(parameter, a=5**0.5)
        else:
            torch.nn.init.uniform_(parameter, -0.1, 0.1)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_function = torch.nn.MSELoss()
    net.train()
    # One thread: these nets are tiny, and torch's thread pool only adds waiting (on a busy 2-core machine
    # 1000 steps took 3 s on one thread and 79 s on two). Restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            loss_function(net(data.X_train), data.y_train).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def trained_seed_nets(steps: int = 5000) -> tuple[dict[str, torch.nn.Module], SeedData]:
    """The three seed nets, trained on the seed data."""
    data = seed_data()
    return {name: train(make(), data, steps) for name, make in SEED_NETS.items()}, data
