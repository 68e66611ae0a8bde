"""The control topic: the control view and mig status (mig/control/)."""
