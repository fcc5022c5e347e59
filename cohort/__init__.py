"""Cohorts on Dask: ``python -m cohort -i IN -o OUT [--workers N | --scheduler ADDRESS]``.

The appliance's per-case work (``app.pipeline.run_case``) as Dask tasks: every worker compiles
the models once (a worker plugin, set up again on a restarted worker), a case is a task that
never raises for a bad input (its error comes back as a record), a killed worker's case is
retried by the scheduler, outputs are written atomically (a retry rewrites the same file), and
every case's record streams into ``OUT/.medseg-results.jsonl``. ``distributed`` is installed
from ``requirements/cohort.txt``; the product image does not carry it.
"""
