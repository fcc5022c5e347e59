"""What segmenting one image or volume gives back, 2D and 3D alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Progress of one image or volume: (decoder steps done, steps in all). A 2D step is a box; a 3D
# step is one object on one slice after its key slice.
OnStep = Callable[[int, int], None]


@dataclass(frozen=True)
class Segmentation:
    """The label map and what it cost (encoder and decoder calls; 3D: the embedding cache)."""

    labels: np.ndarray  # (H, W) or (D, H, W) uint16, on the input's grid; box i -> label i + 1
    encodes: int = 0  # encoder calls (3D: slices encoded, re-encodes included)
    decodes: int = 0  # decoder calls (one per box, 3D: per box and slice)
    cache_peak: int = 0  # 3D: most slice embeddings held at once (0 for 2D)
