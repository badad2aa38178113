"""Networks shared by the policies: the 1D temporal UNet, the diffusion transformer, the vision encoders."""

from .transformer import TransformerForDiffusion
from .unet1d import ConditionalUnet1D, check_unet_horizon
from .vision import ImageEncoder, ObservationEncoder, ResNet18Trunk, SpatialSoftmax

__all__ = [
    "ConditionalUnet1D", "check_unet_horizon", "TransformerForDiffusion",
    "ImageEncoder", "ObservationEncoder", "ResNet18Trunk", "SpatialSoftmax",
]
