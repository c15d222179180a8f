"""genpipe: train class-conditional image generators on Ray, gate them on quality, publish synthetic datasets."""

__version__ = "0.1.0"
