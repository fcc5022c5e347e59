"""Image screen: before a specialist over another encoder (a student) encodes an image, is the
image like any whose boxes its router accepted?

A specialist over another encoder costs a case its router refuses one encoder call more: the
student's embedding is computed only for the router to say no, then LiteMedSAM encodes the
image again (the cascade, ``app/infer_2d.py``). On a source the specialist never saw, that is
every case (BUSI for the US specialist: 2.02 s a case without the screen, 1.77 s with it, ``make
bench-screen`` on an AVX2 host). The screen decides from
the pixels the app already has, before any encoder runs: an image far from every image the
specialist's router accepted goes straight to LiteMedSAM, exactly as if the router had refused
every box. It never decides that a box goes to the specialist: an admitted image goes through
the router as before. So the screen can only trade a specialist's gain for LiteMedSAM's mask
(never worse than the general model); it is calibrated so that on our corpus it trades none
(``train/screen_fit.py``).

Features of one image (the model-frame image part, channels averaged, values in [0, 1]):
    thumbnail (256,) the image part area-resized to 16 x 16
    histogram (16,)  fraction of pixels per sixteenth of [0, 1]
    aspect    (1,)   log(width / height) of the image
Distances as the router's (``app/novelty.py``): each block standardised by the reference, the
root of the mean over blocks of each block's mean squared difference, to the nearest
reference image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np

from app.novelty import Layout, Standardised, load_table, save_table
from app.preprocessing import encoder_input

THUMBNAIL = 16  # pixels per side
HISTOGRAM_BINS = 16
# Feature layout: name -> (start, stop) in the feature vector.
SCREEN_BLOCKS: Layout = {
    "thumbnail": (0, THUMBNAIL * THUMBNAIL),
    "histogram": (THUMBNAIL * THUMBNAIL, THUMBNAIL * THUMBNAIL + HISTOGRAM_BINS),
    "aspect": (THUMBNAIL * THUMBNAIL + HISTOGRAM_BINS, THUMBNAIL * THUMBNAIL + HISTOGRAM_BINS + 1),
}
N_SCREEN_FEATURES = THUMBNAIL * THUMBNAIL + HISTOGRAM_BINS + 1


def screen_features(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 image as the app loads it -> (N_SCREEN_FEATURES,) float32."""
    tensor, (newh, neww) = encoder_input(image, size)  # (1, 3, S, S) in [0, 1], image top-left
    grey = tensor[0, :, :newh, :neww].mean(axis=0)  # (newh, neww)
    thumb = cv2.resize(grey, (THUMBNAIL, THUMBNAIL), interpolation=cv2.INTER_AREA)  # (16, 16)
    hist = np.histogram(grey, bins=HISTOGRAM_BINS, range=(0.0, 1.0))[0] / grey.size
    aspect = np.log(neww / newh)
    return np.concatenate([thumb.ravel(), hist, [aspect]]).astype(np.float32)


@dataclass(frozen=True)
class Screen(Standardised):
    """A specialist's image domain: standardised reference images and the admission threshold."""

    layout: ClassVar[Layout] = SCREEN_BLOCKS

    def distance(self, feats: np.ndarray) -> np.ndarray:
        """(K, N_SCREEN_FEATURES) raw features -> (K,) distance to the nearest reference image."""
        return self.nearest(feats)

    def admits(self, feats: np.ndarray) -> tuple[bool, float]:
        """(N_SCREEN_FEATURES,) raw features of one image -> (admitted, its distance)."""
        d = float(self.distance(feats)[0])
        return d <= self.threshold, d


def save_screen(path: Path, screen: Screen) -> None:
    """Write ``screen`` as an npz (features fp16) atomically."""
    save_table(path, (screen.features, screen.center, screen.scale, screen.threshold))


def load_screen(path: Path) -> Screen:
    """The screen stored at ``path`` (see :func:`save_screen`)."""
    return Screen(*load_table(path, "image screen", N_SCREEN_FEATURES))
