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
    "encode": "preprocess and one encoder call",
    "decode": "one decoder call and the mask per box",
    "npz write": "compressed, atomic write of the labels",
}


def run(case: str, out_dir: str, cache_dir: str) -> dict[str, float]:
    marks = [time.perf_counter()]
    from pathlib import Path

    import numpy as np

    from app.npz_io import load_case, write_output
    from app.postprocessing import logits_to_mask, paint
    from app.preprocessing import box_to_model, clip_box_2d, encoder_input
    from app.routing import DEFAULT_MODEL_KEY
    from app.sessions import SessionCache, create_core
    from common.paths import MODELS

    marks.append(time.perf_counter())
    sessions = SessionCache(create_core(Path(cache_dir)), MODELS)
    session = sessions.get(DEFAULT_MODEL_KEY)
    marks.append(time.perf_counter())
    session.compile_encoder()
    marks.append(time.perf_counter())
    session.compile_decoder()
    marks.append(time.perf_counter())
    loaded = load_case(Path(case))
    marks.append(time.perf_counter())
    tensor, resized = encoder_input(loaded.image, session.input_size)
    embedding = session.encode(tensor)
    marks.append(time.perf_counter())
    hw = loaded.image.shape[:2]
    labels = np.zeros(hw, dtype=np.uint16)
    for label, box in enumerate(loaded.boxes, start=1):
        model_box = box_to_model(clip_box_2d(box, hw), hw, session.input_size)
        paint(labels, logits_to_mask(session.decode(embedding, model_box), resized, hw), label)
    marks.append(time.perf_counter())
    write_output(Path(out_dir) / loaded.name, labels, loaded.name)
    marks.append(time.perf_counter())
    return {name: b - a for name, a, b in zip(PHASES, marks[:-1], marks[1:], strict=True)}


if __name__ == "__main__":
    print(json.dumps(run(*sys.argv[1:4])))
    from app.__main__ import exit_now

    exit_now(0)
