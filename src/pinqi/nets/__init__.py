"""Networks: the regularising UNets and the unrolled PINQI model."""

from pinqi.nets.pinqi import PINQI, PINQIConfig, PINQIOutput
from pinqi.nets.unet import UNet

__all__ = ["PINQI", "PINQIConfig", "PINQIOutput", "UNet"]
