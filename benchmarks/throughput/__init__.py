"""`python -m benchmarks.throughput [--json]`: the sampler's throughput, latency, memory and
their scaling with the buffer, over OTLP/gRPC on loopback (see `harness` and
benchmarks/README.md)."""
