"""Tools for developers and newcomers: the embedded Redis, the demo and the benchmark."""
