"""Tissue classes of the BrainWeb anatomical models and their 3 T relaxation parameters."""

from __future__ import annotations

from dataclasses import dataclass

#: Class label -> name, as in the BrainWeb crisp models (label 0 is background).
CLASS_NAMES: tuple[str, ...] = (
    "background",
    "csf",
    "grey matter",
    "white matter",
    "fat",
    "muscle",
    "muscle/skin",
    "skull",
    "vessels",
    "around fat",
    "dura mater",
    "bone marrow",
)
N_CLASSES = len(CLASS_NAMES)

#: Labels whose fraction counts as brain tissue for the brain mask.
BRAIN_LABELS: tuple[int, ...] = (1, 2, 3, 8)


@dataclass(frozen=True)
class TissueRange:
    """Uniform sampling ranges of one tissue class: T1 in s and |M0| in a.u."""

    t1: tuple[float, float]
    m0: tuple[float, float]


#: Plausible 3 T ranges per class (Bojorquez et al. 2017, the paper's ref. [20], as tabulated
#: by the authors' code; skull as in their later port). Indexed by class label.
TISSUES: tuple[TissueRange, ...] = (
    TissueRange(t1=(1.0, 1.0), m0=(0.0, 0.0)),  # background: no signal
    TissueRange(t1=(2.0, 4.0), m0=(0.9, 1.0)),  # csf
    TissueRange(t1=(1.2, 2.0), m0=(0.7, 1.0)),  # grey matter
    TissueRange(t1=(0.8, 1.5), m0=(0.5, 0.9)),  # white matter
    TissueRange(t1=(0.3, 0.5), m0=(0.9, 1.0)),  # fat
    TissueRange(t1=(1.2, 1.5), m0=(0.9, 1.0)),  # muscle
    TissueRange(t1=(0.5, 0.9), m0=(0.9, 1.0)),  # muscle/skin
    TissueRange(t1=(0.2, 2.0), m0=(0.0, 0.05)),  # skull
    TissueRange(t1=(1.7, 2.1), m0=(0.8, 1.0)),  # vessels
    TissueRange(t1=(0.4, 0.6), m0=(0.6, 0.9)),  # around fat
    TissueRange(t1=(2.0, 2.8), m0=(0.9, 1.0)),  # dura mater
    TissueRange(t1=(0.4, 0.6), m0=(0.7, 1.0)),  # bone marrow
)
