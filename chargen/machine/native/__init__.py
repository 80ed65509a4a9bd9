"""Kernels in C, compiled on the user's machine for its CPU (see ``build``)."""

from chargen.machine.native.build import lstm_library

__all__ = ["lstm_library"]
