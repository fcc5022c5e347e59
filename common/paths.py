"""Every path the offline stages share, in one place (nnU-Net's ``paths.py`` idea).

All are relative to the project root, where every make target runs. The runtime (``app/``)
has its own default models folder (``app.cli.DEFAULT_MODELS_DIR``, next to the package) and
imports nothing from here.
"""

from __future__ import annotations

from pathlib import Path

SHARED_DATA = Path("../shared/data")  # outside the repository: never committed
PUBLIC = SHARED_DATA / "public"  # one source per modality, mostly
PUBLIC2 = SHARED_DATA / "public2"  # further sources: validation by source
SMOKE = SHARED_DATA / "smoke"  # the smoke CT the bench resamples into large volumes
SPLIT_CSV = Path("splits/public.csv")  # train / val by source (make split)
MODELS = Path("models")  # make export writes here
BUILD = Path("build")  # caches, runs and training states; never committed
STUDENT_REPORTS = Path("reports/students")  # candidates table; one folder per distilled student
