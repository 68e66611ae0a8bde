"""Checkpoints (mig/checkpoint/) and the CRIU they use."""
