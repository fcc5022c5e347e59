"""One 2D case in a fresh process, timed phase by phase (``make startup`` runs it as a child).

``python -m evaluation.startup_phases CASE.npz OUT_DIR CACHE_DIR`` prints one JSON object:
seconds per phase of what ``python -m app`` does for one 2D case routed to LiteMedSAM, in its
order. Only the standard library is imported before the clock starts, so ``imports`` holds the
app's imports (numpy, OpenCV, OpenVINO, the app's modules); the interpreter's own start and exit
(which ends as ``python -m app`` does, without the teardown) are the parent's wall time minus
the sum of these phases.
"""

from __future__ import annotations

import json
import sys
import time

# Phase name -> what it holds, in the order they run.
PHASES: dict[str, str] = {
    "imports": "numpy, OpenCV, OpenVINO and the app's modules",
    "core": "OpenVINO Core with the compiled-model cache, the manifest",
    "encoder load": "the encoder's compiled graph from the cache",
    "decoder load": "the decoder's compiled graph from the cache",
    "npz read": "load and check the case",
    "encode": "one encoder call",
    "decode": "the rest of app.infer_2d.segment_image: preprocessing, one decoder call and mask per box",
    "npz write": "compressed, atomic write of the labels",
}


class TimedEncoder:
    """A session whose encoder calls are timed (``seconds``); everything else is the session's."""

    def __init__(self, session: object) -> None:
        self._session = session
        self.seconds = 0.0

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)

    def encode(self, images: object) -> object:
        t0 = time.perf_counter()
        out = self._session.encode(images)
        self.seconds += time.perf_counter() - t0
        return out


def run(case: str, out_dir: str, cache_dir: str) -> dict[str, float]:
    marks = [time.perf_counter()]
    from pathlib import Path

    from app.infer_2d import segment_image
    from app.npz_io import load_case, write_output
    from app.routing import DEFAULT_MODEL_KEY, modality
    from app.sessions import SessionCache, create_core
    from common.paths import MODELS

    marks.append(time.perf_counter())
    sessions = SessionCache(create_core(Path(cache_dir)), MODELS)
    # at the precision the app runs the case's route at on this host (app/precision.py)
    session = sessions.get(DEFAULT_MODEL_KEY, sessions.precision_for(2, modality(Path(case).name)))
    marks.append(time.perf_counter())
    session.compile_encoder()
    marks.append(time.perf_counter())
    session.compile_decoder()
    marks.append(time.perf_counter())
    loaded = load_case(Path(case))
    marks.append(time.perf_counter())
    timed = TimedEncoder(session)
    labels = segment_image(loaded.image, loaded.boxes, timed).labels  # the app's own 2D path
    marks.append(time.perf_counter())
    write_output(Path(out_dir) / loaded.name, labels, loaded.name)
    marks.append(time.perf_counter())
    steps = dict(zip(["imports", "core", "encoder load", "decoder load", "npz read", "segment", "npz write"],
                     (b - a for a, b in zip(marks[:-1], marks[1:], strict=True)), strict=True))  # fmt: skip
    segment = steps.pop("segment")
    steps |= {"encode": timed.seconds, "decode": segment - timed.seconds}
    return {name: steps[name] for name in PHASES}


if __name__ == "__main__":
    print(json.dumps(run(*sys.argv[1:4])))
    from app.__main__ import exit_now

    exit_now(0)
