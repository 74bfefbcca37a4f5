"""texas: tells an app whether the bearer token it just received is genuine."""

__version__ = "0.1.0"
