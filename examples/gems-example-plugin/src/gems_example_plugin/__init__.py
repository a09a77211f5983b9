"""An example flag_gems family, written the way an outside author writes one."""

__version__ = "0.1.0"
