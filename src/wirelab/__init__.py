"""Wirelab: backend communication patterns and protocols, running for real and measured."""

from wirelab._compiled import prefer_source

__all__ = ["__version__"]

__version__ = "0.1.0"

prefer_source()
