"""Evaluation: benchmarks, the runner and its cache, statistics — over models reached through providers."""
