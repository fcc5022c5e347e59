"""Helpers every offline stage shares (export, evaluation, train, container, demo, tests): paths
(the data roots), machine (what a measurement ran on), reports (Markdown and CSV), process (run
and time ``python -m app``), synthetic (generated cases, hostile files, NIfTI and DICOM) and
overlay (pictures). Imports nothing from those stages, nor from the runtime."""
