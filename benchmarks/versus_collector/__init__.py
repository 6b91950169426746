"""`python -m benchmarks.versus_collector [--json]`: agent-tail-sampler side by side with the
OpenTelemetry Collector's `tail_sampling` processor, on the same agent traffic and one core
each: recall at the kept volume each had, sustained spans per second, peak memory (see
`harness` and benchmarks/README.md).

- `policies`: the collector's policy set for this traffic, and a Python model of it;
- `systems`: both systems as pinned processes, asked the same questions of their own metrics;
- `replay`: the labelled corpus sent live on its own timeline, compressed;
- `sink`: the OTLP/gRPC server both forward to, counting and recording what they keep;
- `profile`: py-spy summaries of where the sampler's CPU goes.
"""
