"""chargen's version: one place, read by setup.cfg, the weights' metadata, the history and the service."""

__version__ = "0.1.0"
