"""The worker at run time: the loop, batches, reads, the relay, the lease, the stream watch,
metrics."""
