"""``python -m app``: the appliance's command line (``app/cli.py``), started lean.

The app never converts a model, yet ``import openvino`` imports its model converter
(``openvino.tools.ovc`` and its telemetry, ~0.1 s of a 2D case's ~0.6 s) inside a
``try/except ImportError``. The app's own process marks that module absent before openvino is
first imported, so the import is skipped. Only here: export, training and tests import
openvino with its converter.

Once every case is written, the process ends without the interpreter's teardown (module
clean-up, OpenVINO's plugin and thread pool unloading, freeing every array): nothing is left to
do but exit, and the teardown was ~0.05-0.1 s of a ~0.9 s 2D case (``make startup``'s
``warm, full teardown`` row). Streams and logging are flushed first.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

MODEL_CONVERTER = "openvino.tools.ovc"


def leave_out_model_converter() -> None:
    """Make ``import openvino`` skip its model converter in this process (no effect once
    openvino is imported)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault(MODEL_CONVERTER, None)


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once logging and the standard streams are flushed, skipping
    the interpreter's teardown (every output file is already complete: written and renamed)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave_out_model_converter()
    from app.cli import main

    exit_now(main())
