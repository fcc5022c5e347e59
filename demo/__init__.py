"""Embedded demo and synthetic cases: everything here is generated or ships with a PyPI package."""
