"""``python -m app``: the appliance's command line (``app/cli.py``), started lean.

The app never converts a model, yet ``import openvino`` imports its model converter
(``openvino.tools.ovc`` and its telemetry, ~0.1 s of a 2D case's ~0.6 s) inside a
``try/except ImportError``. The app's own process marks that module absent before openvino is
first imported, so the import is skipped. Only here: export, training and tests import
openvino with its converter.
"""

from __future__ import annotations

import sys

MODEL_CONVERTER = "openvino.tools.ovc"


def leave_out_model_converter() -> None:
    """Make ``import openvino`` skip its model converter in this process (no effect once
    openvino is imported)."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault(MODEL_CONVERTER, None)


if __name__ == "__main__":
    leave_out_model_converter()
    from app.cli import main

    raise SystemExit(main())
