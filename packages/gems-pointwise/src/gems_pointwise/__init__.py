"""flag_gems family: elementwise ops."""

__version__ = "0.1.0"
