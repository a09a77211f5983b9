"""flag_gems family: matrix products."""

__version__ = "0.1.0"
