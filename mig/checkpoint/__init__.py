"""Checkpoints: CRIU, the archive and its Kafka store, restoring an app from one,
and the local checkpointer a primary alone runs."""
