"""Real architectures rebuilt from plain ``torch.nn``, faithful to torchvision's (and BERT's) layer structure.

torchvision's CUDA wheel does not load beside the CPU torch of this project, so the models benchmark W5 needs
are written here, module for module as torchvision 0.2x builds them (the same submodule names, kernel sizes,
strides, paddings, biases and activation placement), with random weights:

- ``resnet18``: the 7x7 stride-2 stem, 3x3 max pooling with stride 2 and padding 1, four stages of two
  ``BasicBlock``s (1x1 strided convolution + BN on the skip where the shape changes), adaptive average pooling,
  a linear head.
- ``mobilenet_v3_small``: hardswish stem, inverted residuals with depthwise convolutions, squeeze-excitation
  (adaptive average pooling, 1x1 convolutions, ReLU, hardsigmoid), the classifier's hardswish.
- ``densenet121``: dense blocks of (BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv) layers whose outputs are
  concatenated, transitions with 2x2 average pooling.
- ``vit_b_16``: the 16x16 patch convolution, a class token, learned position embeddings and 12 pre-norm
  ``nn.TransformerEncoderLayer``-style blocks (``nn.MultiheadAttention``, GELU MLP), at a small image size.
- ``bert_encoder``: word, position and token-type embeddings, LayerNorm and 12 post-norm blocks with GELU, a
  pooler (tanh) and a classifier; explained at the embeddings' output (token ids are not differentiable), so
  the module here takes embeddings of shape (seq, 768) as its input.

``separate_relus=True`` gives every call site its own ReLU instance (torchvision's ResNet and DenseNet call one
``self.relu`` twice per block, which shap and Captum cannot explain through: they need one module per call).
Every ReLU is not in-place (torch.export functionalises in-place ReLUs anyway, but the references' hooks do not
like them). BatchNorm running statistics are randomised too (``randomize_batchnorm``): a fresh BN in eval mode is
the identity, which would hide what folding it does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters for every BatchNorm (a fresh one is the identity)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                module.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
                module.bias.copy_(0.1 * torch.randn(n, generator=generator))
    return model


def _relu(separate: bool, shared: nn.Module | None = None) -> nn.Module:
    return nn.ReLU() if separate or shared is None else shared


# -- ResNet-18 ------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """torchvision.models.resnet.BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, + identity (or downsample), ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None, separate_relus: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.relu2 = nn.ReLU() if separate_relus else None
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        return (self.relu2 or self.relu)(out)


class ResNet(nn.Module):
    """torchvision.models.resnet.ResNet with BasicBlocks."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes: int = 10, separate_relus: bool = False):
        super().__init__()
        self.inplanes = 64
        self.separate_relus = separate_relus
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, self.separate_relus)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes, separate_relus=self.separate_relus) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, separate_relus: bool = False) -> nn.Module:
    return randomize_batchnorm(ResNet((2, 2, 2, 2), num_classes, separate_relus))


# -- MobileNetV3-small ----------------------------------------------------------------------------------------
def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dNormActivation(nn.Sequential):
    """torchvision.ops.Conv2dNormActivation: conv (no bias), BN, activation (or none)."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, activation=nn.ReLU):
        padding = (kernel_size - 1) // 2
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation as MobileNetV3 uses it (ReLU, hardsigmoid)."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, use_se, activation, stride):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(Conv2dNormActivation(cin, expanded, 1, activation=act))
        layers.append(Conv2dNormActivation(expanded, expanded, kernel, stride, groups=expanded, activation=act))
        if use_se:
            layers.append(SqueezeExcitation(expanded, _make_divisible(expanded // 4, 8)))
        layers.append(Conv2dNormActivation(expanded, cout, 1, activation=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        result = self.block(x)
        return result + x if self.use_res_connect else result


# (input channels, kernel, expanded channels, output channels, SE, activation, stride): torchvision's table
_MOBILENET_V3_SMALL = [
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
]


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10, last_channel: int = 1024):
        super().__init__()
        layers = [Conv2dNormActivation(3, 16, 3, 2, activation=nn.Hardswish)]
        layers += [InvertedResidual(*config) for config in _MOBILENET_V3_SMALL]
        layers.append(Conv2dNormActivation(96, 576, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(576, last_channel), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(last_channel, num_classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_small(num_classes: int = 10) -> nn.Module:
    return randomize_batchnorm(MobileNetV3(num_classes))


# -- DenseNet-121 ---------------------------------------------------------------------------------------------
class _DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int, bn_size: int, separate_relus: bool):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        concatenated = torch.cat(features, 1)
        bottleneck = self.conv1(self.relu1(self.norm1(concatenated)))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, cin: int, bn_size: int, growth: int, separate_relus: bool):
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(cin + i * growth, growth, bn_size, separate_relus))

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """torchvision.models.densenet.DenseNet (growth 32, blocks (6, 12, 24, 16), 64 initial features)."""

    def __init__(self, growth=32, blocks=(6, 12, 24, 16), init_features=64, bn_size=4, num_classes=10):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, init_features, 7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(init_features))
        self.features.add_module("relu0", nn.ReLU())
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        channels = init_features
        for i, layers in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(layers, channels, bn_size, growth, True))
            channels += layers * growth
            if i != len(blocks) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(channels, channels // 2))
                channels //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x))  # torchvision's functional ReLU
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


def densenet121(num_classes: int = 10) -> nn.Module:
    return randomize_batchnorm(DenseNet(num_classes=num_classes))


# -- ViT-B/16 -------------------------------------------------------------------------------------------------
class MLPBlock(nn.Sequential):
    def __init__(self, dim: int, mlp_dim: int):
        super().__init__(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp_dim, dim), nn.Dropout(0.0))


class EncoderBlock(nn.Module):
    """torchvision.models.vision_transformer.EncoderBlock: pre-norm attention and MLP with residuals."""

    def __init__(self, heads: int, dim: int, mlp_dim: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp_dim)

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class VisionTransformer(nn.Module):
    """torchvision.models.vision_transformer.VisionTransformer (B/16: 12 layers, 12 heads, 768, MLP 3072)."""

    def __init__(self, image_size=32, patch_size=16, layers=12, heads=12, dim=768, mlp_dim=3072, num_classes=10):
        super().__init__()
        self.patch_size = patch_size
        self.conv_proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        seq = (image_size // patch_size) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, dim).normal_(std=0.02))
        self.layers = nn.Sequential(*(EncoderBlock(heads, dim, mlp_dim) for _ in range(layers)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Sequential(nn.Linear(dim, num_classes))

    def forward(self, x):
        n = x.shape[0]
        x = self.conv_proj(x).reshape(n, self.conv_proj.out_channels, -1).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1) + self.pos_embedding
        x = self.ln(self.layers(x))
        return self.heads(x[:, 0])


def vit_b_16(image_size: int = 32, num_classes: int = 10) -> nn.Module:
    return VisionTransformer(image_size=image_size, num_classes=num_classes)


# -- BERT-like encoder ----------------------------------------------------------------------------------------
class BertLayer(nn.Module):
    """BERT's layer: self-attention, dense + dropout + residual LayerNorm, GELU intermediate, output LayerNorm."""

    def __init__(self, dim: int = 768, heads: int = 12, intermediate: int = 3072):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attention_output = nn.Linear(dim, dim)
        self.attention_norm = nn.LayerNorm(dim, eps=1e-12)
        self.intermediate = nn.Linear(dim, intermediate)
        self.activation = nn.GELU()
        self.output = nn.Linear(intermediate, dim)
        self.output_norm = nn.LayerNorm(dim, eps=1e-12)

    def _split(self, x):
        n, s, _ = x.shape
        return x.reshape(n, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x):
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        context = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(x.shape)
        x = self.attention_norm(x + self.attention_output(context))
        return self.output_norm(x + self.output(self.activation(self.intermediate(x))))


class BertEncoderClassifier(nn.Module):
    """BERT-base's encoder (12 layers, 768, 12 heads) on embeddings (seq, 768): the embeddings' sum of position
    and token-type vectors, LayerNorm, the layers, the pooler's tanh on the first token, a linear classifier."""

    def __init__(self, seq: int = 64, layers: int = 12, dim: int = 768, heads: int = 12, num_classes: int = 2):
        super().__init__()
        self.position_embeddings = nn.Parameter(0.02 * torch.randn(1, seq, dim))
        self.token_type_embeddings = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.embedding_norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.Sequential(*(BertLayer(dim, heads, 4 * dim) for _ in range(layers)))
        self.pooler = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, embeddings):
        x = self.embedding_norm(embeddings + self.position_embeddings + self.token_type_embeddings)
        x = self.layers(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def bert_encoder(seq: int = 64, num_classes: int = 2, layers: int = 12) -> nn.Module:
    return BertEncoderClassifier(seq=seq, layers=layers, num_classes=num_classes)
