"""Quality benchmark: labelled synthetic agent traffic (generator) and the recall of rare
sessions this sampler reaches against uniform and status-code sampling at equal volume
(harness). Run ``python -m benchmarks.quality --json``."""
