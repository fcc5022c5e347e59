"""Offline evaluation: agreement with the baseline oracle, accuracy metrics, reports."""
