"""3D cases: key slice per box, then propagation up and down, one embedding per slice.

For every box: the middle slice of its (inclusive, clipped) z range is prompted with the 2D box;
each further slice is prompted with the box of the same object's mask on the neighbouring slice
(+/- 3 px), or with the original box when that mask is empty. All boxes advance together in one
sweep per direction, so a slice is encoded once and shared by every box that needs it; the
embedding is dropped as soon as no pending step needs it. An object whose chosen decoder is over
another encoder than the router's (the cascade: a specialist over a student encoder, LiteMedSAM
for the boxes its router refuses) is propagated on that encoder's own embeddings, kept in a
second cache of the same kind; its slices' uses move from the first cache to the second.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.postprocessing import logits_to_mask, paint, propagation_box
from app.preprocessing import box_to_model, clip_box_2d, clip_z_range, encoder_input, resized_hw
from app.result import OnStep, Segmentation
from app.sessions import ChooseDecoder, Session

# Embeddings kept at most, all encoders' caches together (4 MiB each): bounds them at 1 GiB.
# Beyond it a slice still needed later is re-encoded then (counted in SliceEmbeddings.encodes).
DEFAULT_CACHE_SLICES = 256

UP, DOWN = 1, -1


@dataclass
class ObjectTrack:
    """One box's propagation state. Frames: box_orig in image pixels, box_model in model pixels."""

    label: int
    box_model: np.ndarray  # (4,) prompt for the key slice and the fallback
    z_min: int
    z_key: int
    z_max: int
    prev_mask: np.ndarray | None = None  # (H, W) bool mask on the last slice processed
    key_mask: np.ndarray | None = None
    decoder: Session | None = None  # chosen on the key slice, kept for the whole track

    def steps(self, direction: int) -> range:
        """Slices after the key slice in ``direction``, in processing order."""
        if direction == UP:
            return range(self.z_key + 1, self.z_max + 1)
        return range(self.z_key - 1, self.z_min - 1, -1)


@dataclass
class HeldBudget:
    """How many embeddings the caches of one volume may hold together, and hold now."""

    capacity: int
    held: int = 0
    peak: int = 0

    def room(self) -> bool:
        return self.held < self.capacity

    def change(self, by: int) -> None:
        self.held += by
        self.peak = max(self.peak, self.held)


class SliceEmbeddings:
    """Per-slice embedding cache that knows how many uses each slice has left. Several caches of
    one volume (one per encoder) share a :class:`HeldBudget`."""

    def __init__(self, volume: np.ndarray, session: Session, uses: Counter[int], budget: HeldBudget) -> None:
        self._volume = volume
        self._session = session
        self._uses = uses
        self._budget = budget
        self._store: dict[int, np.ndarray] = {}
        self.encodes = 0
        self.resized = resized_hw(volume.shape[1:3], session.input_size)  # same for every slice

    def add_uses(self, zs: range) -> None:
        """Plan one more use of each slice in ``zs``."""
        self._uses.update(zs)

    def release(self, zs: range) -> None:
        """Cancel one planned use of each slice in ``zs`` (dropping what nothing needs any more)."""
        for z in zs:
            self._uses[z] -= 1
            if self._uses[z] <= 0:
                self._drop(z)

    def _drop(self, z: int) -> None:
        if self._store.pop(z, None) is not None:
            self._budget.change(-1)

    def take(self, z: int) -> np.ndarray:
        """(1, 256, 64, 64) embedding of slice z, for one use."""
        emb = self._store.get(z)
        if emb is None:
            tensor, _ = encoder_input(self._volume[z], self._session.input_size)
            emb = self._session.encode(tensor)
            self.encodes += 1
        self._uses[z] -= 1
        if self._uses[z] <= 0:
            self._drop(z)
        elif z not in self._store and self._budget.room():
            self._store[z] = emb
            self._budget.change(+1)
        return emb


def make_tracks(boxes: np.ndarray, volume_shape: tuple[int, ...], size: int) -> list[ObjectTrack]:
    """(N, 6) boxes -> tracks for the boxes that touch the volume (others are skipped)."""
    depth, h, w = volume_shape[:3]
    tracks = []
    for label, box in enumerate(boxes, start=1):
        z_range = clip_z_range(box[2], box[5], depth)
        box_2d = clip_box_2d(box[[0, 1, 3, 4]], (h, w))
        if z_range is None or box_2d is None:
            continue
        z0, z1 = z_range
        tracks.append(ObjectTrack(label, box_to_model(box_2d, (h, w), size), z0, (z0 + z1) // 2, z1))
    return tracks


def slice_uses(tracks: list[ObjectTrack]) -> Counter[int]:
    """How many decoder steps need each slice's embedding."""
    uses: Counter[int] = Counter()
    for t in tracks:
        uses.update(range(t.z_min, t.z_max + 1))
    return uses


def propagation_steps(tracks: list[ObjectTrack]) -> int:
    """Decoder steps after the key slices (for progress reporting)."""
    return sum(t.z_max - t.z_min for t in tracks)


class EncoderCaches:
    """One :class:`SliceEmbeddings` per encoder (``Session.encoder_id``) of a volume: the
    router's session first, any other created when a track first chooses a decoder over it."""

    def __init__(
        self, volume: np.ndarray, session: Session, tracks: list[ObjectTrack], capacity: int
    ) -> None:
        self._volume, self.budget = volume, HeldBudget(capacity)  # capacity: all caches together
        self.primary = SliceEmbeddings(volume, session, slice_uses(tracks), self.budget)
        self._by_encoder = {session.encoder_id: self.primary}

    def assign(self, track: ObjectTrack, decoder: Session) -> SliceEmbeddings:
        """The cache ``track`` is decoded from once ``decoder`` serves it. Called after the
        primary cache gave up the key slice's embedding for the choice: over another encoder, the
        track's other slices leave the primary cache and all of its slices join the other one."""
        cache = self._by_encoder.get(decoder.encoder_id)
        if cache is None:
            cache = SliceEmbeddings(self._volume, decoder, Counter(), self.budget)
            self._by_encoder[decoder.encoder_id] = cache
        if cache is not self.primary:
            self.primary.release(range(track.z_min, track.z_key))
            self.primary.release(range(track.z_key + 1, track.z_max + 1))
            cache.add_uses(range(track.z_min, track.z_max + 1))
        return cache

    def of(self, track: ObjectTrack) -> SliceEmbeddings:
        """The cache of ``track``'s decoder (assigned on its key slice)."""
        return self.primary if track.decoder is None else self._by_encoder[track.decoder.encoder_id]

    @property
    def encodes(self) -> int:
        return sum(c.encodes for c in self._by_encoder.values())

    @property
    def peak(self) -> int:
        """The most embeddings the caches held at once, together."""
        return self.budget.peak


def propagate(
    tracks: list[ObjectTrack],
    direction: int,
    caches: EncoderCaches,
    labels: np.ndarray,
    session: Session,
    on_step: Callable[[], None] | None = None,
) -> int:
    """Advance every track away from its key slice in ``direction`` (UP: +z, DOWN: -z); returns
    the decoder calls made."""
    schedule: dict[int, list[ObjectTrack]] = {}
    for t in tracks:
        t.prev_mask = t.key_mask
        for z in t.steps(direction):
            schedule.setdefault(z, []).append(t)
    hw = labels.shape[1:3]
    decodes = 0
    for z in sorted(schedule, reverse=direction == DOWN):
        for t in schedule[z]:
            embeddings = caches.of(t)
            emb = embeddings.take(z)
            prompt = (
                None if t.prev_mask is None else propagation_box(t.prev_mask, t.label, session.input_size)
            )
            box = t.box_model if prompt is None else prompt
            decoder = session if t.decoder is None else t.decoder
            t.prev_mask = logits_to_mask(decoder.decode(emb, box), embeddings.resized, hw)
            paint(labels[z], t.prev_mask, t.label)
            decodes += 1
            if on_step is not None:
                on_step()
    return decodes


def segment_volume(
    volume: np.ndarray,
    boxes: np.ndarray,
    session: Session,
    capacity: int = DEFAULT_CACHE_SLICES,
    on_step: OnStep | None = None,
    choose: ChooseDecoder | None = None,
) -> Segmentation:
    """(D, H, W) or (D, H, W, 3) uint8 volume, (N, 6) boxes -> (D, H, W) uint16 labels.

    The steps are planned once (one track per box); ``on_step(done, total)`` follows the
    propagation. ``choose`` picks each object's decoder on its key slice (with the key box and
    ``session``'s embedding); the object keeps it, and its encoder's embeddings, through its
    propagation."""
    labels = np.zeros(volume.shape[:3], dtype=np.uint16)
    tracks = make_tracks(boxes, volume.shape, session.input_size)
    if not tracks:
        return Segmentation(labels)
    caches = EncoderCaches(volume, session, tracks, capacity)
    resized, hw = caches.primary.resized, labels.shape[1:3]
    for t in sorted(tracks, key=lambda t: t.z_key):
        emb = caches.primary.take(t.z_key)
        t.decoder = session if choose is None else choose(emb, t.box_model, resized)
        cache = caches.assign(t, t.decoder)
        if cache is not caches.primary:
            emb = cache.take(t.z_key)
        t.key_mask = logits_to_mask(t.decoder.decode(emb, t.box_model), resized, hw)
        paint(labels[t.z_key], t.key_mask, t.label)
    total, done = propagation_steps(tracks), 0

    def step() -> None:
        nonlocal done
        done += 1
        if on_step is not None:
            on_step(done, total)

    decodes = len(tracks)
    decodes += propagate(tracks, UP, caches, labels, session, step)
    decodes += propagate(tracks, DOWN, caches, labels, session, step)
    return Segmentation(labels, caches.encodes, decodes, caches.peak)
