"""rlhf_platform: a Ray-based asynchronous RLHF platform."""

__version__ = "0.1.0"
