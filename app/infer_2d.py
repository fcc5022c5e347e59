"""2D cases: encode the image once, decode each box, later box wins on overlap."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from app.postprocessing import logits_to_mask, paint
from app.preprocessing import box_to_model, clip_box_2d, encoder_input
from app.result import OnStep, Segmentation
from app.sessions import DECODER_BATCH, ChooseDecoder, Session
from app.windows import CELL, GRID, WINDOW, full_logits, rim_positive, window_corner

# A decoder batches only when it serves at least this many boxes of one image: the batched graph
# is a graph of its own to load (0.14-0.15 s from the cache on that AMD EPYC, an ad hoc timing:
# about 5 boxes' worth), and the last call's spare places are decoded for nothing (up to 7 boxes
# at 0.88x). From 48 boxes the ~12% saved per box pays for both.
BATCHED_FROM = 48


@dataclass(frozen=True)
class BoxPlan:
    """One box to decode: its label, its model-frame box and the session whose decoder serves it."""

    label: int
    box_model: np.ndarray  # (4,) float32 XYXY, model frame
    decoder: Session


class ImageEmbeddings:
    """One image's embedding per encoder (``Session.encoder_id``), each computed on first need:
    a box whose chosen decoder is over another encoder than the router's gets that encoder's own
    embedding of the same model-frame tensor (all sessions of one case share the frame)."""

    def __init__(self, tensor: np.ndarray) -> None:
        self._tensor = tensor  # (1, 3, S, S) float32
        self._by_encoder: dict[str, np.ndarray] = {}

    def of(self, session: Session) -> np.ndarray:
        """(1, 256, 64, 64) embedding of the image by ``session``'s encoder."""
        emb = self._by_encoder.get(session.encoder_id)
        if emb is None:
            emb = self._by_encoder[session.encoder_id] = session.encode(self._tensor)
        return emb

    @property
    def encodes(self) -> int:
        return len(self._by_encoder)


def plan_boxes(
    boxes: np.ndarray,
    original_hw: tuple[int, int],
    session: Session,
    embedding: np.ndarray,
    resized: tuple[int, int],
    choose: ChooseDecoder | None,
) -> list[BoxPlan]:
    """(N, 4) XYXY boxes in the original frame -> one plan per box inside the image (box i has
    label i+1; a box entirely outside is left out), its decoder chosen from ``embedding``."""
    plans = []
    for label, box in enumerate(boxes, start=1):
        clipped = clip_box_2d(box, original_hw)
        if clipped is None:
            continue
        box_model = box_to_model(clipped, original_hw, session.input_size)
        decoder = session if choose is None else choose(embedding, box_model, resized)
        plans.append(BoxPlan(label, box_model, decoder))
    return plans


def by_decoder(plans: list[BoxPlan]) -> list[list[BoxPlan]]:
    """The plans grouped by decoder (the same session object), groups in first-seen order."""
    groups: dict[int, list[BoxPlan]] = {}
    for plan in plans:
        groups.setdefault(id(plan.decoder), []).append(plan)
    return list(groups.values())


def decoder_form(boxes: int, input_size: int, batch: int, window: int) -> tuple[int, int]:
    """(boxes per call, window cells) of the decoder graph a group of ``boxes`` boxes of one
    image decodes with first (``decode_group``): one box per call below BATCHED_FROM boxes or
    without batching, else ``batch`` per call, on ``window``-cell windows where those are laid
    out (a 256 frame), else whole. What ``predict_case`` has loaded in the background."""
    if batch < 2 or boxes < BATCHED_FROM:
        return 1, 0
    return batch, window if window and input_size == GRID * CELL else 0


def decode_whole(
    group: list[BoxPlan], embedding: np.ndarray, batch: int
) -> Iterator[tuple[BoxPlan, np.ndarray]]:
    """Each plan of ``group`` (one decoder) with its (256, 256) logits on ``embedding``, as they
    come (a call's worth in memory at a time): ``batch`` boxes per call when the group has at
    least BATCHED_FROM, else one."""
    decoder = group[0].decoder
    if decoder_form(len(group), decoder.input_size, batch, 0) == (1, 0):
        for plan in group:
            yield plan, decoder.decode(embedding, plan.box_model)
        return
    for start in range(0, len(group), batch):
        chunk = group[start : start + batch]
        boxes_model = np.stack([p.box_model for p in chunk])  # (k <= batch, 4)
        logits = decoder.decode_many(embedding, boxes_model, batch)  # (k, 256, 256)
        yield from zip(chunk, logits, strict=True)


def decode_group(
    group: list[BoxPlan], embedding: np.ndarray, resized: tuple[int, int], batch: int, window: int = WINDOW
) -> Iterator[tuple[BoxPlan, np.ndarray]]:
    """Each plan of ``group`` (one decoder) with its (256, 256) logits on ``embedding``, as they
    come. A group that batches (at least BATCHED_FROM boxes, ``batch`` > 1) decodes each box that
    fits a ``window``-cell window on it (``app/windows.py``), ``batch`` per call, and keeps those
    logits where the window is closed; every other box, and every box of a smaller group, is
    decoded whole (``decode_whole``)."""
    decoder = group[0].decoder
    if decoder_form(len(group), decoder.input_size, batch, window)[1] == 0:
        yield from decode_whole(group, embedding, batch)  # windows are laid out on a 256 frame
        return
    placed = [(plan, window_corner(plan.box_model, window)) for plan in group]
    fits = [(plan, corner) for plan, corner in placed if corner is not None]
    whole = [plan for plan, corner in placed if corner is None]
    for start in range(0, len(fits), batch):
        chunk = fits[start : start + batch]
        boxes_model = np.stack([plan.box_model for plan, _ in chunk])  # (k <= batch, 4)
        corners = [corner for _, corner in chunk]
        logits = decoder.decode_windows(embedding, boxes_model, corners, batch, window)  # (k, W*4, W*4)
        for (plan, corner), window_logits in zip(chunk, logits, strict=True):
            if rim_positive(window_logits, corner, resized):
                whole.append(plan)  # the mask may go on beyond the window
            else:
                yield plan, full_logits(window_logits, corner)
    if whole:
        yield from decode_whole(whole, embedding, batch)


def segment_image(
    image: np.ndarray,
    boxes: np.ndarray,
    session: Session,
    choose: ChooseDecoder | None = None,
    batch: int = DECODER_BATCH,
    on_step: OnStep | None = None,
    window: int = WINDOW,
) -> Segmentation:
    """(H, W, 3) uint8 image, (N, 4) XYXY boxes -> (H, W) uint16 labels (box i -> label i+1).

    ``session`` encodes; ``choose`` picks the decoder per box from ``session``'s embedding (a
    decoder over another encoder decodes that encoder's embedding). Boxes entirely outside the
    image are skipped (their label stays absent). A decoder serving many boxes decodes ``batch``
    per call (``decode_group``), on ``window``-cell windows where that is exact enough (0: never);
    the labels do not depend on the order boxes are painted in.
    ``on_step(done, total)`` follows the boxes decoded.
    """
    original_hw = image.shape[:2]
    labels = np.zeros(original_hw, dtype=np.uint16)
    if len(boxes) == 0:
        return Segmentation(labels)
    tensor, resized = encoder_input(image, session.input_size)
    embeddings = ImageEmbeddings(tensor)
    plans = plan_boxes(boxes, original_hw, session, embeddings.of(session), resized, choose)
    done = 0
    for group in by_decoder(plans):
        for plan, logits in decode_group(group, embeddings.of(group[0].decoder), resized, batch, window):
            paint(labels, logits_to_mask(logits, resized, original_hw), plan.label)
            done += 1
            if on_step is not None:
                on_step(done, len(plans))
    return Segmentation(labels, encodes=embeddings.encodes, decodes=len(plans))
