from benchmarks.throughput.harness import main

raise SystemExit(main())
