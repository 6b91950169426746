"""An OTLP/gRPC load generator for the sampler, meant to run in processes of its own.

- `pool`: agent sessions from the quality generator, pre-serialized once in collector-sized
  requests and routed to sampler processes by session key; each *round* of the pool gets new
  trace ids and session keys by rewriting bytes at offsets found once, so a long run is new
  traffic throughout and the generator never builds a message while it sends.
- `driver`: several concurrent streams (one channel each) sending those bytes with grpc's
  generic unary call, as fast as accepted or at a target rate; it counts refusals
  (RESOURCE_EXHAUSTED) and times every Export call.
- `python -m benchmarks.loadgen`: one worker process that loads a pool file and runs the
  driver on commands read from stdin (one JSON object a line), answering on stdout.
"""
