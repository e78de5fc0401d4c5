"""Networks: the regularising UNets, the unrolled PINQI model and the reference methods."""

from pinqi.nets.method_config import METHOD_NAMES, MethodConfig
from pinqi.nets.methods import build_network, count_parameters
from pinqi.nets.pinqi import PINQI, PINQIConfig, PINQIOutput
from pinqi.nets.unet import UNet

__all__ = [
    "METHOD_NAMES",
    "PINQI",
    "MethodConfig",
    "PINQIConfig",
    "PINQIOutput",
    "UNet",
    "build_network",
    "count_parameters",
]
