"""2D cases: encode the image once, decode once per box, later box wins on overlap."""

from __future__ import annotations

import numpy as np

from app.postprocessing import logits_to_mask, paint
from app.preprocessing import box_to_model, clip_box_2d, encoder_input
from app.result import Segmentation
from app.sessions import ChooseDecoder, Session


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


def segment_image(
    image: np.ndarray, boxes: np.ndarray, session: Session, choose: ChooseDecoder | None = None
) -> Segmentation:
    """(H, W, 3) uint8 image, (N, 4) XYXY boxes -> (H, W) uint16 labels (box i -> label i+1).

    ``session`` encodes; ``choose`` picks the decoder per box from ``session``'s embedding (a
    decoder over another encoder decodes that encoder's embedding). Boxes entirely outside the
    image are skipped (their label stays absent).
    """
    original_hw = image.shape[:2]
    labels = np.zeros(original_hw, dtype=np.uint16)
    if len(boxes) == 0:
        return Segmentation(labels)
    tensor, resized = encoder_input(image, session.input_size)
    embeddings = ImageEmbeddings(tensor)
    embedding = embeddings.of(session)  # (1, 256, 64, 64)
    decodes = 0
    for label, box in enumerate(boxes, start=1):
        clipped = clip_box_2d(box, original_hw)
        if clipped is None:
            continue
        box_model = box_to_model(clipped, original_hw, session.input_size)
        decoder = session if choose is None else choose(embedding, box_model, resized)
        logits = decoder.decode(embeddings.of(decoder), box_model)
        decodes += 1
        paint(labels, logits_to_mask(logits, resized, original_hw), label)
    return Segmentation(labels, encodes=embeddings.encodes, decodes=decodes)
