"""Operator tools (mig/ops/): doctor, log tools, the demo, the fault campaign."""
