"""Wirelab: backend communication patterns and protocols, running for real and measured."""

__all__ = ["__version__"]

__version__ = "0.1.0"
