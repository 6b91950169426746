"""``python -m benchmarks.quality``: see benchmarks.quality.harness."""

from benchmarks.quality.harness import main

raise SystemExit(main())
