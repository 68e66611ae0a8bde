"""Operator tools on top of the paths: status, the log tools, doctor, clocks,
migrate and the demo."""
