"""mig: record an unmodified Linux application into Kafka and keep hot standbys replaying it."""

__all__ = ["__version__"]

__version__ = "0.1.0"
