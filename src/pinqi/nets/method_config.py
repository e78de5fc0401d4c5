"""Which network an experiment trains: PINQI or one of the paper's reference methods."""

from __future__ import annotations

from dataclasses import dataclass

#: Method names: PINQI, the three reference methods of Sec. 3.3, and the unrolled image
#: reconstructions of the ablations in Sec. 3.4 (the other ablations are PINQI switches).
METHOD_NAMES = ("pinqi", "mantis", "deept1", "dopamine", "unrolled-unet", "unrolled-fit")


@dataclass(frozen=True)
class MethodConfig:
    """Settings of the method (the ``method`` section of a preset).

    Attributes
    ----------
    name
        One of :data:`METHOD_NAMES`: ``pinqi`` (the ``model`` section configures it),
        ``mantis`` (:class:`~pinqi.nets.mantis.MANTIS`), ``deept1``
        (:class:`~pinqi.nets.deept1.DeepT1`), ``dopamine``
        (:class:`~pinqi.nets.dopamine.DOPAMINE`), ``unrolled-unet`` (ablation: unrolled
        reconstruction + a separate parameter UNet) or ``unrolled-fit`` (ablations:
        unrolled reconstruction + the signal fit, :class:`~pinqi.nets.unrolled.UnrolledFit`).
        The unrolled ones use PINQI's image and parameter UNets (``model`` section).
    features
        Channels per level of the reference UNets (MANTIS; DeepT1's parameter UNet).
    norm_groups
        GroupNorm groups of those UNets.
    iterations
        DeepT1's cascades, DOPAMINE's gradient steps, the unrolled reconstructions' cascades.
    hidden, layers
        Width and depth of DeepT1's recurrent CNN and of DOPAMINE's CNNs.
    kspace_weight
        MANTIS: weight of the k-space consistency term of the loss (paper: 0.01).
    image_weight
        ``unrolled-unet``: weight of the image MSE beside the parameter MSE (authors: 0.2).
    end_to_end
        ``unrolled-fit``: train through the signal-fit layer on the parameter MSE (ablation
        "with non-linear optimisation layer"), or on the image MSE only, the fit applied at
        inference ("separate regression").
    clip
        DOPAMINE: per-parameter threshold of the tanh soft-clipping of every update, above the
        parameters' dynamic range over the training data.
    """

    name: str = "pinqi"
    features: tuple[int, ...] = (64, 128, 256, 512)
    norm_groups: int = 16
    iterations: int = 5
    hidden: int = 64
    layers: int = 5
    kspace_weight: float = 0.01
    image_weight: float = 0.2
    end_to_end: bool = True
    clip: tuple[float, ...] = (2.0, 2.0, 10.0)

    def __post_init__(self) -> None:
        if self.name not in METHOD_NAMES:
            raise ValueError(f"method.name must be one of {METHOD_NAMES}, got {self.name!r}")
        if self.iterations < 1 or self.layers < 2 or self.hidden < 1:
            raise ValueError(
                "method.iterations >= 1, layers >= 2 and hidden >= 1 needed, got "
                f"{self.iterations}, {self.layers}, {self.hidden}"
            )
