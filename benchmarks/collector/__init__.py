"""The real OpenTelemetry Collector built here (see README.md): how Python finds its binary."""
