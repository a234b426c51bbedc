"""Benchmarks: every figure the project states comes from one of these."""
