"""flag_gems family: normalisation layers, forward and backward."""

__version__ = "0.1.0"
