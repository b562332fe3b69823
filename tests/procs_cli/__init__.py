"""Modules that the CLI tests load with `taskora worker module:app` in child processes."""
