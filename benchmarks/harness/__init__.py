"""Benchmark harness: everything that is not library-specific (server, venvs, processes, stats, report)."""
