"""What runs inside a Dask worker: the models, compiled once per worker process, and the case task."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from distributed import WorkerPlugin, get_worker

from app.pipeline import run_case
from app.precision import mode_from
from app.sessions import SessionCache, cache_dir_from, create_core

PLUGIN_NAME = "medseg-sessions"


class SessionsPlugin(WorkerPlugin):
    """Gives each worker one :class:`SessionCache` (models compiled once, on first use, then kept).

    The scheduler keeps the plugin and sets it up on every worker that joins, a restarted one
    included. ``threads``: OpenVINO inference threads of this worker (None: OpenVINO decides)."""

    name = PLUGIN_NAME

    def __init__(self, models: Path, cache_dir: Path | None, threads: int | None) -> None:
        self.models, self.cache_dir, self.threads = models, cache_dir, threads
        self.sessions: SessionCache | None = None
        self.setups = 0

    def setup(self, worker: object) -> None:
        # Case errors come back as records; the client prints them once, not every worker too.
        logging.getLogger("app").setLevel(logging.CRITICAL)
        cache = cache_dir_from(self.cache_dir)  # this worker's own default when None
        mode = mode_from(None)  # SEG_PRECISION, as the app CLI reads it
        self.sessions = SessionCache(create_core(cache), self.models, self.threads, mode)
        self.setups += 1


def worker_sessions() -> SessionCache:
    plugin = get_worker().plugins[PLUGIN_NAME]
    if plugin.sessions is None:
        msg = f"the {PLUGIN_NAME} plugin was not set up on this worker"
        raise RuntimeError(msg)
    return plugin.sessions


def segment_task(case: str, out_dir: str, max_image_bytes: int | None) -> dict:
    """One case on this worker: the app's result record as a dict (never raises for a bad case)."""
    record = run_case(Path(case), Path(out_dir), worker_sessions(), max_image_bytes)
    return asdict(record)


def worker_facts(dask_worker: object) -> dict:
    """For ``client.run``: how often this worker set its models up and compiled graphs."""
    plugin = dask_worker.plugins[PLUGIN_NAME]  # type: ignore[attr-defined]
    compiles = plugin.sessions.compiles if plugin.sessions is not None else 0
    return {"setups": plugin.setups, "compiles": compiles}
