"""The mig command (mig/cli/)."""
