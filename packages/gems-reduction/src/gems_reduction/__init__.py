"""flag_gems family: reductions, scans, the softmax family, losses and sorting."""

__version__ = "0.1.0"
