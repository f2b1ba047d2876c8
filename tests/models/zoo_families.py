"""Tiny plain-torch rebuilds of the architecture families of torchvision and timm (torchvision itself does not load
beside this project's CPU torch). Written from the published designs, not from either library's source: each keeps
the op patterns that matter for conversion and DeepLIFT (the block structure, the nonlinearities, the products,
the pools, the norms, the shape ops), at widths of 4-16 channels, one or two blocks, 3x16x16 inputs and 3 classes
(each op costs the tests its compilation time: these are as small as the patterns allow).

Where the library calls a ReLU functionally, in place (``inplace=True``) or through one instance several times,
these call one out-of-place ``nn.ReLU`` instance per call site: the function is the same, the references' verdicts
then show what each family's own design does to them (an in-place module makes shap raise before anything else;
a reused one makes Captum raise), and those forms are covered on their own elsewhere (reused and functional ReLUs
in test_cnn_models.py, in-place modules in tests/test_diagnosis.py; xshap handles all three). Each
``make_<family>()`` returns an eval-mode model with seeded random weights and non-trivial BatchNorm statistics.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from tests.models.common import randomize_batchnorm

N_CLASSES = 3
IMAGE = (3, 16, 16)


def randomize_norms(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm running statistics and affine parameters made non-trivial (BN is then not the identity:
    ``tests.models.common.randomize_batchnorm``), and the LayerNorm affines too (they initialise to 1 and 0)."""
    randomize_batchnorm(model, seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm) and module.elementwise_affine:
                module.weight.copy_(0.8 + 0.4 * torch.rand(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model


def _finish(model: nn.Module, seed: int) -> nn.Module:
    return randomize_norms(model, seed).eval()


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class StochasticDepth(nn.Module):
    """Drop the whole residual branch of a row with probability p while training; the identity in eval."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty(x.shape[0], *([1] * (x.dim() - 1)), dtype=x.dtype).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


# -- 1. ResNet (bottleneck) ------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (the stride sits here, as in ResNet v1.5), 1x1 expand; BN after each; skip (a strided 1x1
    conv + BN when the shape changes), then ReLU. One ReLU per call site (torchvision reuses one, in place)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1, self.bn1 = conv_bn(cin, width, 1)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride)
        self.relu2 = nn.ReLU()
        self.conv3, self.bn3 = conv_bn(width, cout, 1)
        self.relu3 = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # overlapping windows: kernel 3 > stride 2
        self.layer1 = nn.Sequential(Bottleneck(8, 4, stride=2))  # 8 -> 4 wide -> 16 channels: a projection skip
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * Bottleneck.expansion, N_CLASSES)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(self.layer1(x)), 1))


def make_resnet() -> nn.Module:
    torch.manual_seed(10)
    return _finish(ResNet(), 11)


# -- 2. MobileNetV2 --------------------------------------------------------------------------------------------
class InvertedResidual(nn.Module):
    """1x1 expansion + BN + ReLU6 (left out at expansion 1), 3x3 depthwise + BN + ReLU6, 1x1 linear projection + BN
    (no activation: the linear bottleneck); a residual where stride is 1 and the width is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += conv_bn(hidden, cout, 1)
        self.conv = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(*conv_bn(3, 6, 3, 2), nn.ReLU6()),
            InvertedResidual(6, 6, 1, expand=2),  # 6 -> 12 -> 6, with the residual
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(6, N_CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def make_mobilenet_v2() -> nn.Module:
    torch.manual_seed(20)
    return _finish(MobileNetV2(), 21)


# -- 3. EfficientNet -------------------------------------------------------------------------------------------
class SqueezeExcitation(nn.Module):
    """Global average pool, 1x1 reduce, activation, 1x1 expand, sigmoid gate, the input scaled by the gate."""

    def __init__(self, channels: int, squeezed: int, activation: type[nn.Module] = nn.SiLU):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.activation = activation()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        scale = self.gate(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


class MBConv(nn.Module):
    """1x1 expansion + BN + SiLU (left out at expansion 1), depthwise 3x3 + BN + SiLU, squeeze-excitation (squeezed
    to a quarter of the block's input width), 1x1 projection + BN; stochastic depth on the residual branch."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, drop: float):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*conv_bn(cin, hidden, 1), nn.SiLU()]
        layers += [*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.SiLU()]
        layers += [SqueezeExcitation(hidden, max(1, cin // 4)), *conv_bn(hidden, cout, 1)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout
        self.stochastic_depth = StochasticDepth(drop)

    def forward(self, x):
        out = self.block(x)
        return x + self.stochastic_depth(out) if self.use_residual else out


class EfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(*conv_bn(3, 8, 3, 2), nn.SiLU()),
            MBConv(8, 8, 1, expand=2, drop=0.1),  # 8 -> 16 -> SE (squeezed to 2) -> 8, with the residual
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, N_CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def make_efficientnet() -> nn.Module:
    torch.manual_seed(30)
    return _finish(EfficientNet(), 31)


# -- 4. DenseNet -----------------------------------------------------------------------------------------------
class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (to bn_size * growth), BN-ReLU-3x3 conv (to growth), on the concatenation of every earlier
    feature map of the block."""

    def __init__(self, cin: int, growth: int, bn_size: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]):
        x = torch.cat(features, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n_layers: int, cin: int, growth: int, bn_size: int):
        super().__init__({f"denselayer{i + 1}": DenseLayer(cin + i * growth, growth, bn_size) for i in range(n_layers)})

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(kernel_size=2, stride=2)
        )


class DenseNet(nn.Module):
    """7x7/2 stem + BN + ReLU + MaxPool(3, 2, 1); a dense block of two layers (growth 4, bn_size 2), a halving
    transition; final BN + ReLU (a functional in-place ReLU in torchvision, a module here), pool, classifier."""

    def __init__(self, growth: int = 4, bn_size: int = 2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 7, 2, 3, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
            DenseBlock(2, 8, growth, bn_size),  # 8 -> 16 channels
            Transition(16, 8),
            nn.BatchNorm2d(8),
        )
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, N_CLASSES)

    def forward(self, x):
        out = self.relu(self.features(x))
        return self.classifier(torch.flatten(self.pool(out), 1))


def make_densenet() -> nn.Module:
    torch.manual_seed(40)
    return _finish(DenseNet(), 41)


# -- 5. ConvNeXt -----------------------------------------------------------------------------------------------
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map: permuted to channels-last, normalised, permuted back."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, Linear 4x, GELU, Linear back, layer scale (gamma), residual."""

    def __init__(self, dim: int, layer_scale: float, drop: float):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(layer_scale * (1 + torch.rand(dim, 1, 1)))
        self.stochastic_depth = StochasticDepth(drop)

    def forward(self, x):
        out = self.dwconv(x).permute(0, 2, 3, 1)
        out = self.pwconv2(self.act(self.pwconv1(self.norm(out))))
        out = self.layer_scale * out.permute(0, 3, 1, 2)
        return x + self.stochastic_depth(out)


class ConvNeXt(nn.Module):
    """4x4/4 patchify stem + LayerNorm2d, a stage of one block, LayerNorm2d + 2x2/2 conv downsampling; pool,
    Linear (the real head's LayerNorm2d before the Linear is left out: the same op as the others, and the
    compilation time of a LayerNorm's DeepLIFT program is what this file can least afford). The layer scale is
    0.5-1 here (1e-6 at initialisation would hide the block)."""

    def __init__(self, dims: tuple[int, int] = (8, 16)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)),
            nn.Sequential(CNBlock(dims[0], 0.5, 0.1)),
            nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, 2)),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Linear(dims[1], N_CLASSES))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


def make_convnext() -> nn.Module:
    torch.manual_seed(50)
    return _finish(ConvNeXt(), 51)


# -- 6. ViT ----------------------------------------------------------------------------------------------------
class EncoderBlock(nn.Module):
    """Pre-norm: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dropout = nn.Dropout(0.1)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.1), nn.Linear(mlp_dim, dim), nn.Dropout(0.1)
        )

    def forward(self, x):
        h = self.ln_1(x)
        h, _ = self.self_attention(h, h, h, need_weights=False)
        x = x + self.dropout(h)
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """8x8/8 conv patch embedding (4 tokens of 16x16), class token concatenated in front, learned position
    embedding, an encoder block, final LayerNorm, head on the class token."""

    def __init__(self, patch: int = 8, dim: int = 8, heads: int = 2, mlp_dim: int = 16, layers: int = 1):
        super().__init__()
        n_tokens = (IMAGE[1] // patch) * (IMAGE[2] // patch) + 1
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, n_tokens, dim))
        self.dropout = nn.Dropout(0.1)
        self.layers = nn.Sequential(*[EncoderBlock(dim, heads, mlp_dim) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, N_CLASSES)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.ln(self.layers(self.dropout(x + self.pos_embedding)))
        return self.head(x[:, 0])


def make_vit() -> nn.Module:
    torch.manual_seed(60)
    return _finish(ViT(), 61)


# -- 7. Swin ---------------------------------------------------------------------------------------------------
def window_partition(x, w: int):
    """(N, H, W, C) -> (N * windows, w * w, C)."""
    n, h, wd, c = x.shape
    x = x.view(n, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(windows, w: int, h: int, wd: int):
    """(N * windows, w * w, C) -> (N, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, wd, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias: a table of
    (2w - 1)^2 x heads entries, indexed by a buffer of each token pair's relative offset."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(0.02 * torch.randn((2 * window - 1) ** 2, heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2), >= 0
        self.register_buffer("relative_position_index", relative[..., 0] * (2 * window - 1) + relative[..., 1])

    def forward(self, x, mask=None):
        b, n, c = x.shape  # b: batch * windows
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1)  # (b, heads, n, n)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:  # (windows, n, n): 0 within a region, -100 across
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(b, self.heads, n, n)
        attn = F.softmax(attn, dim=-1)  # functional, as torchvision's Swin calls it
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinBlock(nn.Module):
    """x + W-MSA(LN(x)) on (shifted) windows, then x + MLP(LN(x)); channels-last (N, H, W, C) throughout. A shifted
    block rolls the map by -shift, masks attention between the regions the roll brought together (the mask a
    buffer computed once from the map's size), and rolls back."""

    def __init__(self, dim: int, heads: int, size: int, window: int, shift: int):
        super().__init__()
        if window >= size:  # a single window: nothing to shift
            window, shift = size, 0
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.stochastic_depth = StochasticDepth(0.1)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        mask = None
        if shift:
            regions = torch.zeros(1, size, size, 1)
            cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
            for label, (rows, cols) in enumerate((r, c) for r in cuts for c in cuts):
                regions[:, rows, cols, :] = label
            ids = window_partition(regions, window).squeeze(-1)  # (windows, w * w)
            mask = (ids[:, None, :] != ids[:, :, None]).float() * -100.0
        self.register_buffer("attn_mask", mask)

    def forward(self, x):
        n, h, w, c = x.shape
        shortcut = x
        x = self.norm1(x)
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        x = self.attn(window_partition(x, self.window), self.attn_mask)
        x = window_reverse(x, self.window, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        x = shortcut + self.stochastic_depth(x)
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Each 2x2 neighbourhood's four tokens concatenated (4C), LayerNorm, Linear to 2C without bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x0, x1 = x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :]
        x2, x3 = x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], -1)))


class Swin(nn.Module):
    """2x2/2 conv patch embedding + LayerNorm (8x8 tokens of 8), a stage of a plain and a shifted block (window 4,
    shift 2), patch merging (4x4 of 16); LayerNorm, pool, head."""

    def __init__(self, dim: int = 8, window: int = 4):
        super().__init__()
        size = IMAGE[1] // 2
        self.patch_embed = nn.Conv2d(3, dim, 2, 2)
        self.patch_norm = nn.LayerNorm(dim)
        self.stage1 = nn.Sequential(
            SwinBlock(dim, 2, size, window, shift=0), SwinBlock(dim, 2, size, window, shift=window // 2)
        )
        self.merge = PatchMerging(dim)
        self.norm = nn.LayerNorm(2 * dim)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * dim, N_CLASSES)

    def forward(self, x):
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # (N, H, W, C)
        x = self.norm(self.merge(self.stage1(x)))
        return self.head(torch.flatten(self.avgpool(x.permute(0, 3, 1, 2)), 1))


def make_swin() -> nn.Module:
    torch.manual_seed(70)
    return _finish(Swin(), 71)


# -- 8. RegNet (Y: with squeeze-excitation) --------------------------------------------------------------------
class RegNetBlock(nn.Module):
    """1x1 conv + BN + ReLU, 3x3 group conv (group width 4; the stride sits here) + BN + ReLU, squeeze-excitation
    (ReLU inside, squeezed to a quarter of the block's input width), 1x1 conv + BN; skip (strided 1x1 conv + BN
    when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 4):
        super().__init__()
        self.a = nn.Sequential(*conv_bn(cin, cout, 1), nn.ReLU())
        self.b = nn.Sequential(*conv_bn(cout, cout, 3, stride, groups=cout // group_width), nn.ReLU())
        self.se = SqueezeExcitation(cout, max(1, cin // 4), activation=nn.ReLU)
        self.c = nn.Sequential(*conv_bn(cout, cout, 1))
        self.proj = nn.Sequential(*conv_bn(cin, cout, 1, stride)) if stride != 1 or cin != cout else None
        self.activation = nn.ReLU()

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.c(self.se(self.b(self.a(x)))))


class RegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 8, 3, 2), nn.ReLU())
        self.trunk = nn.Sequential(RegNetBlock(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, N_CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk(self.stem(x))), 1))


def make_regnet() -> nn.Module:
    """The squeeze-excitation weights scaled up (x3), so that its gate varies across inputs as a trained one does
    (at initialisation it stays near sigmoid(0) = 0.5 and the gate is almost a constant)."""
    torch.manual_seed(80)
    model = RegNet()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, SqueezeExcitation):
                module.fc1.weight.mul_(3.0)
                module.fc2.weight.mul_(3.0)
    return _finish(model, 81)


# -- 9. GoogLeNet (Inception v1) -------------------------------------------------------------------------------
class BasicConv2d(nn.Module):
    """conv (no bias) + BN + ReLU (torchvision calls F.relu(..., inplace=True); a module here)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv, self.bn = conv_bn(cin, cout, k, stride)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """Four parallel branches concatenated on the channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 (torchvision's stand-in for
    the paper's 5x5); MaxPool2d(3, 1, 1, ceil_mode=True) -> 1x1."""

    def __init__(self, cin: int, c1: int, c3_red: int, c3: int, c5_red: int, c5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(cin, c1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(cin, c3_red, 1), BasicConv2d(c3_red, c3, 3))
        self.branch3 = nn.Sequential(BasicConv2d(cin, c5_red, 1), BasicConv2d(c5_red, c5, 3))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(cin, pool_proj, 1)
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """7x7/2 stem, MaxPool2d(3, 2, ceil_mode=True), an inception module, pool, dropout, classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = BasicConv2d(3, 8, 7, stride=2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(8, 4, 4, 4, 2, 4, 4)  # 16 channels out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(16, N_CLASSES)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.inception3a(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def make_googlenet() -> nn.Module:
    torch.manual_seed(90)
    return _finish(GoogLeNet(), 91)


FAMILIES = {
    "resnet": make_resnet,
    "mobilenet_v2": make_mobilenet_v2,
    "efficientnet": make_efficientnet,
    "densenet": make_densenet,
    "convnext": make_convnext,
    "vit": make_vit,
    "swin": make_swin,
    "regnet": make_regnet,
    "googlenet": make_googlenet,
}
