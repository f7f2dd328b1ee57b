"""The wire contract: stream names and fields, decoding and encoding, bounds on copies of input."""
