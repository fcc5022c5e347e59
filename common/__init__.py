"""Helpers every offline stage shares (export, evaluation, train, container, demo): the machine a
measurement ran on, and report writing. Imports nothing from those stages."""
