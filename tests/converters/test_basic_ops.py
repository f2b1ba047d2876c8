"""Per-op forward checks of the foundation's ops: linear algebra, shapes, arithmetic, activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.converters.helpers import assert_converts


class Lambda(torch.nn.Module):
    """A module whose forward is a function of its input, with a Linear in front so weights are involved."""

    def __init__(self, fn, width=6):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.fc(x))


def _inplace_relu(h):
    h = h.clone()
    F.relu_(h)
    return h


OPS = {
    "linear": lambda h: F.linear(h, torch.ones(3, 6), torch.tensor([0.0, 1.0, 2.0])),
    "addmm": lambda h: torch.addmm(torch.ones(3), h, torch.ones(6, 3), beta=0.5, alpha=2.0),
    "mm": lambda h: torch.mm(h, torch.tensor(np.eye(6, 4, dtype=np.float32))),
    "matmul": lambda h: h @ torch.tensor(np.linspace(-1, 1, 12, dtype=np.float32).reshape(6, 2)),
    "view": lambda h: h.view(-1, 2, 3)[:, 0],
    "reshape": lambda h: h.reshape(h.shape[0], 3, 2)[:, 1],
    "flatten": lambda h: torch.flatten(h.view(h.shape[0], 2, 3), 1),
    "permute": lambda h: h.view(h.shape[0], 2, 3).permute(0, 2, 1).reshape(h.shape[0], 6),
    "transpose": lambda h: h.view(h.shape[0], 2, 3).transpose(1, 2).reshape(h.shape[0], 6),
    "t": lambda h: (h.t() * 2).t(),
    "squeeze_unsqueeze": lambda h: h.unsqueeze(1).unsqueeze(-1).squeeze(-1).squeeze(1),
    "squeeze_all": lambda h: h.view(h.shape[0], 1, 6).squeeze().reshape(-1, 6),
    "cat": lambda h: torch.cat([h[:, :2], h * 2, h[:, 4:]], dim=1),
    "slice_step": lambda h: h[:, 1:5:2],
    "select": lambda h: h.select(1, 2).unsqueeze(1) + h[:, -1:],
    "add_sub_scalar": lambda h: (h + 2) - 0.5 + (3 - h),
    "add_sub_tensor": lambda h: h + h[:, :1] - torch.add(h, h, alpha=0.5),
    "mul_div_scalar": lambda h: h * 3 / 2,
    "mul_div_tensor": lambda h: h * h[:, 1:2] / (h * h + 1),
    "relu_functional": F.relu,
    "relu_module": torch.nn.ReLU(),
    "relu_inplace_module": torch.nn.ReLU(inplace=True),
    "relu_inplace_functional": _inplace_relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "softplus_beta_threshold": torch.nn.Softplus(beta=2.0, threshold=1.0),
    "elu": F.elu,
    "elu_alpha": torch.nn.ELU(alpha=0.3),
    "leaky_relu": F.leaky_relu,
    "leaky_relu_slope": torch.nn.LeakyReLU(0.2),
    "dropout_module_eval": torch.nn.Dropout(0.5),
    "dropout_functional_eval": lambda h: F.dropout(h, 0.3, training=False),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_matches_torch(name):
    torch.manual_seed(0)
    model = Lambda(OPS[name])
    x = torch.randn(5, 6) * 2
    assert_converts(model, x)


def test_provenance_names_module_call_and_line():
    class Reused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)
            self.act = torch.nn.ReLU()

        def forward(self, x):
            h = self.act(self.fc(x))
            return self.act(self.fc(h))

    converted = assert_converts(Reused(), torch.randn(3, 4))
    relus = [p for p in converted.ops if p.op.startswith("aten.relu")]
    assert [(p.module_path, p.call_index) for p in relus] == [("act", 0), ("act", 1)]
    assert all(p.module_type == "torch.nn.modules.activation.ReLU" for p in relus)
    assert relus[0].source.endswith(str(int(relus[1].source.rsplit(":", 1)[1]) - 1))
    assert "self.act(self.fc(x))" in relus[0].code
