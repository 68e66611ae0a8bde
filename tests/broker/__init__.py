"""The embedded broker (mig/broker/) and the test cluster."""
