"""The control topic: what a member concludes from it (the control view: epoch,
primary, claims, handoffs, hot replicas) and the status fold `mig status` shows."""
