"""app.toml (mig/config/)."""
