"""Benchmark harness: all that is not library-specific (server, venvs, processes, stats, report)."""
