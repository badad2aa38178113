"""Observation encoders: a ResNet-18 per camera (GroupNorm, spatial softmax) and the per-step feature stack.

The image encoder follows Diffusion Policy's vision backbone: ResNet-18 trained from scratch, every
BatchNorm replaced by GroupNorm (groups = channels // 16; BatchNorm statistics interact badly with the
EMA of weights), global average pooling replaced by a spatial softmax (keypoint coordinates keep the
spatial information that manipulation needs), random crop while training and center crop at evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common import is_image_shape

from ..batch_share import per_sample


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(channels // 16, channels)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a residual; the shortcut projects when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), _group_norm(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Trunk(nn.Module):
    """ResNet-18 without pooling and classifier: (N, 3, H, W) -> (N, 8 * base_channels, ~H/32, ~W/32).

    base_channels 64 is the standard ResNet-18; smaller multiples of 16 give tiny nets for tests.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64):
        super().__init__()
        if base_channels % 16:
            raise ValueError(f"base_channels must be a multiple of 16 (GroupNorm uses channels // 16 groups), "
                             f"got {base_channels}")
        c = base_channels
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c, 7, stride=2, padding=3, bias=False), _group_norm(c), nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        widths = [c, 2 * c, 4 * c, 8 * c]
        layers, prev = [], c
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(prev, width, stride), BasicBlock(width, width)))
            prev = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(self.stem(x))


class SpatialSoftmax(nn.Module):
    """Feature map (N, C, H, W) -> keypoints (N, 2 * num_keypoints): a 1x1 conv makes one map per keypoint,
    a softmax over its pixels gives an attention distribution, and the keypoint is the expected (x, y) in
    [-1, 1] under it."""

    def __init__(self, in_channels: int, num_keypoints: int = 32, temperature: float = 1.0):
        super().__init__()
        self.keypoint_conv = nn.Conv2d(in_channels, num_keypoints, 1)
        self.temperature = temperature
        self.num_keypoints = num_keypoints

    def forward(self, features: Tensor) -> Tensor:
        maps = self.keypoint_conv(features)
        n, k, h, w = maps.shape
        attention = torch.softmax(maps.reshape(n, k, h * w) / self.temperature, dim=-1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=maps.device, dtype=maps.dtype),
                                torch.linspace(-1, 1, w, device=maps.device, dtype=maps.dtype), indexing="ij")
        grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (H*W, 2) as (x, y)
        return (attention @ grid).reshape(n, 2 * k)


def crop_images(images: Tensor, crop_shape: tuple[int, int], random: bool) -> Tensor:
    """Crop channel-last images (N, H, W, C) to (N, ch, cw, C): an independent random window per image, or
    the center window."""
    n, h, w, _ = images.shape
    ch, cw = crop_shape
    if (ch, cw) == (h, w):
        return images
    if random:
        # per sample of the global batch (policy/batch_share.py); the N images are batch-major (B, To)
        top = per_sample(lambda m: torch.randint(0, h - ch + 1, (m, 1, 1), device=images.device), n)
        left = per_sample(lambda m: torch.randint(0, w - cw + 1, (m, 1, 1), device=images.device), n)
        rows = top + torch.arange(ch, device=images.device)[None, :, None]  # (N, ch, 1)
        cols = left + torch.arange(cw, device=images.device)[None, None, :]  # (N, 1, cw)
        return images[torch.arange(n, device=images.device)[:, None, None], rows, cols]
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[:, top:top + ch, left:left + cw]


class ImageEncoder(nn.Module):
    """One camera: images (N, H, W, 3) -> features (N, feature_dim).

    Input is channel-last, either uint8 0..255 (mapped to [-1, 1] here) or float already normalized to
    [-1, 1] (what the policy's normalizer produces). Crops randomly in training mode and at the center in
    eval mode (``self.training``), so call ``.eval()`` before rollouts.
    """

    def __init__(self, image_shape: Sequence[int], crop_shape: Sequence[int] | None = (84, 84),
                 feature_dim: int = 64, num_keypoints: int = 32, base_channels: int = 64):
        super().__init__()
        h, w, c = image_shape
        self.crop_shape = tuple(crop_shape) if crop_shape is not None else (h, w)
        if self.crop_shape[0] > h or self.crop_shape[1] > w:
            raise ValueError(f"crop_shape {self.crop_shape} is larger than the image {h}x{w}")
        if max(self.crop_shape) <= 32:
            # ResNet-18 halves the size 5 times: a 1x1 feature map makes every spatial-softmax keypoint (0, 0).
            raise ValueError(f"images of {self.crop_shape} (after cropping) are too small for ResNet-18 with a "
                             f"spatial softmax: use at least 33 pixels on one side")
        self.backbone = ResNet18Trunk(c, base_channels)
        self.pool = SpatialSoftmax(self.backbone.out_channels, num_keypoints)
        self.out = nn.Linear(2 * num_keypoints, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, images: Tensor) -> Tensor:
        images = crop_images(images, self.crop_shape, random=self.training)
        x = images.permute(0, 3, 1, 2)  # (N, C, H, W)
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        return self.out(self.pool(self.backbone(x)))


class ObservationEncoder(nn.Module):
    """Normalized obs {key: (B, To, *shape)} -> features (B, To * feature_dim) (or (B, To, feature_dim)).

    Image keys (3-dim (H, W, 3) shapes) go through their own ImageEncoder, batched over B * To; low-dim keys
    are flattened. Per step, features are concatenated in ``obs_shapes`` order, then steps are flattened.
    """

    def __init__(self, obs_shapes: Mapping[str, Sequence[int]], crop_shape: Sequence[int] | None = (84, 84),
                 image_feature_dim: int = 64, num_keypoints: int = 32, base_channels: int = 64):
        super().__init__()
        self.obs_shapes = {k: tuple(v) for k, v in obs_shapes.items()}
        self.image_encoders = nn.ModuleDict({
            key: ImageEncoder(shape, crop_shape, image_feature_dim, num_keypoints, base_channels)
            for key, shape in self.obs_shapes.items() if is_image_shape(shape)
        })
        self.feature_dim = sum(
            image_feature_dim if is_image_shape(shape) else int(torch.Size(shape).numel())
            for shape in self.obs_shapes.values()
        )

    def forward(self, obs: Mapping[str, Tensor], flatten: bool = True) -> Tensor:
        batch, steps = next(iter(obs[k] for k in self.obs_shapes)).shape[:2]
        features = []
        for key, shape in self.obs_shapes.items():
            x = obs[key]
            if tuple(x.shape[2:]) != shape:
                raise ValueError(f"obs[{key!r}] has shape {tuple(x.shape)}, expected (B, To, *{shape})")
            if key in self.image_encoders:
                features.append(self.image_encoders[key](x.reshape(batch * steps, *shape)).reshape(batch, steps, -1))
            else:
                features.append(x.reshape(batch, steps, -1).float())
        per_step = torch.cat(features, dim=-1)
        return per_step.reshape(batch, -1) if flatten else per_step
