"""Agora: an open network for AI work."""

__version__ = "0.1.0"
