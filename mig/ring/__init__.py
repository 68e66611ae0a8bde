"""The shared memory between the shim and its member's agent: the ring of call
records, the call kinds, and the batch codec that turns ring records into CallBatch records."""
