"""Normalization of observations and actions ("limits" mode, docs/design.md section 4).

Low-dim keys: per feature, the training data's [min, max] maps linearly to [-1, 1]:
    y = x * scale + offset,  scale = 2 / (max - min),  offset = -1 - min * scale.
A feature whose range is below 1e-4 (constant in the training data) is only shifted: scale = 1,
offset = -min, so its training value maps to 0 and nothing is divided by a tiny range.
Statistics are taken over axis 0 of each fitted array (N, *feature_shape): per column of a state (N, 5),
per element of the trailing shape of keypoints (N, 9, 2) (stats of shape (9, 2)).
Image keys: uint8 [0, 255] -> [-1, 1] (y = x / 127.5 - 1), no statistics needed.

The statistics are registered buffers, so they are part of the owning policy's `state_dict()`, move with
`.to(device)`, and load into an empty `Normalizer()` (the fields are created from the state dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

RANGE_EPS = 1e-4  # features with max - min below this are only shifted


class _Field(nn.Module):
    """The affine map of one key: y = x * scale + offset, with scale/offset/min/max of shape feature_shape."""

    def __init__(self, feature_shape: tuple[int, ...] = (), image: bool = False):
        super().__init__()
        for name in ("scale", "offset", "min", "max"):
            self.register_buffer(name, torch.zeros(feature_shape))
        self.register_buffer("image", torch.tensor(image))


class Normalizer(nn.Module):
    """Per-key normalization to [-1, 1]; see the module docstring.

    >>> norm = Normalizer.fit({"state": states (N, 5), "action": actions (N, 2)}, image_keys=("img",))
    >>> y = norm.normalize("action", actions_tensor)      # (..., 2) -> (..., 2) in [-1, 1] on training data
    >>> x = norm.unnormalize("action", y)
    """

    def __init__(self):
        super().__init__()
        self.fields = nn.ModuleDict()

    @classmethod
    def fit(cls, data: Mapping[str, np.ndarray], image_keys: Sequence[str] = ()) -> Normalizer:
        """Fit low-dim keys on `data` {key: array (N, *feature_shape)}; image keys get the fixed uint8 map."""
        norm = cls()
        for key, x in data.items():
            if key in image_keys:
                continue
            x = np.asarray(x, dtype=np.float64)
            if x.ndim < 1 or len(x) == 0:
                raise ValueError(f"Normalizer.fit: '{key}' needs an array (N, ...) with N >= 1, got shape {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"Normalizer.fit: '{key}' contains NaN or infinite values")
            lo, hi = x.min(axis=0), x.max(axis=0)
            flat = hi - lo < RANGE_EPS
            scale = np.where(flat, 1.0, 2.0 / np.where(flat, 1.0, hi - lo))
            offset = np.where(flat, -lo, -1.0 - lo * scale)
            norm._set(key, image=False, scale=scale, offset=offset, min=lo, max=hi)
        for key in image_keys:
            norm._set(key, image=True, scale=np.float64(2 / 255), offset=np.float64(-1.0), min=np.float64(0),
                      max=np.float64(255))
        return norm

    def _set(self, key: str, image: bool, **stats: np.ndarray) -> None:
        if "." in key or not key:
            raise ValueError(f"Normalizer: key {key!r} cannot name a module (no '.' and not empty)")
        field = _Field(np.shape(stats["scale"]), image)
        for name, value in stats.items():
            getattr(field, name).copy_(torch.as_tensor(np.asarray(value), dtype=torch.float32))
        self.fields[key] = field

    def _field(self, key: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        if key not in self.fields:
            raise KeyError(f"Normalizer has no statistics for '{key}' (has {sorted(self.fields)})")
        f = self.fields[key]
        shape = tuple(f.scale.shape)
        if shape and tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise ValueError(f"Normalizer: '{key}' expects tensors of shape (..., {', '.join(map(str, shape))}), "
                             f"got {tuple(x.shape)}")
        dtype = x.dtype if x.is_floating_point() else torch.float32  # uint8 images come out float32
        return f.scale.to(x.device, dtype), f.offset.to(x.device, dtype), dtype

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(..., *feature_shape) -> same shape, training data in [-1, 1]; any device, float (uint8 -> float32)."""
        scale, offset, dtype = self._field(key, x)
        return x.to(dtype) * scale + offset

    def unnormalize(self, key: str, y: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize` (images come back as floats in [0, 255], not rounded)."""
        scale, offset, dtype = self._field(key, y)
        return (y.to(dtype) - offset) / scale

    def forward(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(key, x)

    @property
    def keys(self) -> list[str]:
        return sorted(self.fields)

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def stats(self) -> dict[str, dict[str, np.ndarray]]:
        """{key: {"min", "max", "scale", "offset": np.ndarray}} for logging."""
        return {k: {n: getattr(f, n).detach().cpu().numpy() for n in ("min", "max", "scale", "offset")}
                for k, f in self.fields.items()}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Create the fields a saved normalizer had, so that an empty Normalizer() (in a freshly built policy)
        # loads any fitted one; buffers of the right shapes are then filled by the usual loading.
        head = prefix + "fields."
        for name, value in state_dict.items():
            if name.startswith(head) and name.endswith(".scale"):
                key = name[len(head): -len(".scale")]
                image = bool(state_dict.get(f"{head}{key}.image", torch.tensor(False)))
                if key not in self.fields or self.fields[key].scale.shape != value.shape:
                    self.fields[key] = _Field(tuple(value.shape), image)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
