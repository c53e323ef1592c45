"""Sluice: a resilient integration gateway."""

__version__ = "0.1.0"
