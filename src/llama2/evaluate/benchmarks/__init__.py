"""Benchmarks as `Task`s (see `base.Task`)."""
