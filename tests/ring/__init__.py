"""The shared-memory ring and the batch codec (mig/ring/)."""
