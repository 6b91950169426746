from benchmarks.versus_collector.harness import main

raise SystemExit(main())
