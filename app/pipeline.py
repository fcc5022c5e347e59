"""One case end to end: load -> route -> segment (2D or 3D) -> save. The only module that
knows every stage."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.errors import CaseError
from app.infer_2d import decoder_form, segment_image
from app.infer_3d import segment_volume
from app.inputs import input_kind, output_name
from app.novelty import BoxRouter
from app.npz_io import Case, check_output_path, load_case, write_output
from app.precision import DEFAULT_PRECISION
from app.routing import DEFAULT_MODEL_KEY, modality, route
from app.screen import screen_features
from app.sessions import SessionCache, same_frame
from app.shards import Record, is_done

log = logging.getLogger("app")


@dataclass(frozen=True)
class CaseResult:
    name: str
    model_key: str
    seconds: float
    encoder_calls: int


class Progress:
    """Logs 'decoder steps done / total' of a long case (3D: slice steps, 2D: boxes), at most
    every ``every_s`` seconds."""

    def __init__(self, name: str, unit: str, every_s: float = 5.0) -> None:
        self.name, self.unit, self.every_s = name, unit, every_s
        self._last = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            log.info("%s: %d/%d %s", self.name, done, total, self.unit)


def box_router(key: str, sessions: SessionCache, precision: str = DEFAULT_PRECISION) -> BoxRouter | None:
    """The per-box router of a specialist key (None: LiteMedSAM, or a model without a reference);
    both of its models run at ``precision``."""
    reference = sessions.reference(key) if key != DEFAULT_MODEL_KEY else None
    if reference is None:
        return None
    specialist, general = sessions.get(key, precision), sessions.get(DEFAULT_MODEL_KEY, precision)
    same_frame(specialist, general)
    return BoxRouter(specialist, general, reference)


def screened_out(
    case: Case, key: str, sessions: SessionCache, precision: str = DEFAULT_PRECISION
) -> str | None:
    """Why a 2D case skips model ``key`` for LiteMedSAM before any encoder runs (its image screen,
    ``app/screen.py``, finds the image unlike every image its router accepted), or None: the
    case goes to ``key`` and its router as usual. 3D cases are never screened: their router
    decides on each object's key slice, so a refused object costs one student encode, not one
    per slice."""
    screen = None if case.is_3d else sessions.screen(key)
    if screen is None:
        return None
    admitted, distance = screen.admits(screen_features(case.image, sessions.get(key, precision).input_size))
    if admitted:
        return None
    return (
        f"{key}'s image screen: distance {distance:.2f} > {screen.threshold:.2f}, "
        "unlike every image its router accepted"
    )


def served_by(key: str, router: BoxRouter | None) -> str:
    """The model key(s) that decoded a case's boxes."""
    if router is None:
        return key
    took = sum(d.accepted for d in router.decisions)
    keys = [key] if took else []
    keys += [DEFAULT_MODEL_KEY] if took < len(router.decisions) or not router.decisions else []
    return "+".join(keys)


# A case's writer: its label map (uint16, the image's grid) -> output file(s) written.
WriteLabels = Callable[[np.ndarray], None]


def open_case(path: Path, out_dir: Path, max_image_bytes: int | None) -> tuple[Case, WriteLabels]:
    """Load a case and say how its labels are written. npz: here; NIfTI and DICOM: ``clinical/``,
    imported only for such inputs (the npz path never loads nibabel or pydicom)."""
    if input_kind(path) == "npz":
        check_output_path(out_dir / path.name, path.name)
        case = load_case(path, max_image_bytes)
        return case, lambda segs: write_output(out_dir / case.name, segs, case.name)
    from clinical.cases import open_clinical_case

    return open_clinical_case(path, out_dir / output_name(path), max_image_bytes)


def predict_case(
    path: Path, out_dir: Path, sessions: SessionCache, max_image_bytes: int | None = None
) -> CaseResult:
    """Segment one case and write its output into ``out_dir``. Raises CaseError on bad input or
    an output that cannot be written; sizes beyond ``max_image_bytes`` are refused unread."""
    t0 = time.perf_counter()
    case, write = open_case(path, out_dir, max_image_bytes)
    dims, named = 3 if case.is_3d else 2, case.modality or case.name
    key = route(named, dims, sessions.routes)
    precision = sessions.precision_for(dims, modality(named))
    unlike = screened_out(case, key, sessions, precision)
    if unlike is not None:
        log.info("%s: %s; %s serves all %d boxes", case.name, unlike, DEFAULT_MODEL_KEY, len(case.boxes))
        key = DEFAULT_MODEL_KEY
    session = sessions.get(key, precision)
    router = box_router(key, sessions, precision)
    batch, window = sessions.decoder_batch, sessions.decoder_window
    form = (1, 0) if case.is_3d else decoder_form(len(case.boxes), session.input_size, batch, window)
    sessions.prefetch_decoder(key, precision, *form)  # loads while the encoder loads and runs
    log.debug(
        "%s: %dD, image %s, %d boxes, modality %s -> model %s at %s",
        case.name,
        dims,
        case.image.shape,
        len(case.boxes),
        modality(named),
        key,
        precision,
    )
    if case.is_3d:
        progress = Progress(case.name, "slice steps")
        result = segment_volume(case.image, case.boxes, session, on_step=progress, choose=router)
    else:
        progress = Progress(case.name, "boxes")
        result = segment_image(
            case.image, case.boxes, session, choose=router, batch=batch, on_step=progress, window=window
        )
    log.debug("%s: %d encodes, %d decodes, cache peak %d embeddings", case.name, result.encodes,
              result.decodes, result.cache_peak)  # fmt: skip
    if router is not None:
        log.info("%s: %s", case.name, router.summary(key, DEFAULT_MODEL_KEY))
    write(result.labels)
    return CaseResult(case.name, served_by(key, router), time.perf_counter() - t0, result.encodes)


def run_case(
    path: Path, out_dir: Path, sessions: SessionCache, max_image_bytes: int | None, *, skip_done: bool = False
) -> Record:
    """Segment one case (or skip it when its output is complete): its result record. Never raises:
    one broken case must not stop a batch (the CLI's loop, a shard, a Dask worker)."""
    if skip_done and is_done(out_dir / output_name(path)):
        log.info("%s: skipped, output already complete", path.name)
        return Record(path.name, "skipped", 0.0)
    t0 = time.perf_counter()
    try:
        result = predict_case(path, out_dir, sessions, max_image_bytes)
    except CaseError as exc:
        log.error("case failed: %s", exc)
        return Record(path.name, "failed", time.perf_counter() - t0, error=exc.problem)
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the batch
        log.error("case failed: %s: unexpected %s: %s", path.name, type(exc).__name__, exc)
        log.debug("%s", traceback.format_exc())
        return Record(path.name, "failed", time.perf_counter() - t0, error=f"{type(exc).__name__}: {exc}")
    log.info(
        "%s: done in %.2f s (model %s, %d encoder calls)",
        result.name,
        result.seconds,
        result.model_key,
        result.encoder_calls,
    )
    return Record(path.name, "done", round(result.seconds, 3), model=result.model_key)
