"""ranklab: reproducible experiments for ads ranking and recommendation."""

__version__ = "0.1.0"
