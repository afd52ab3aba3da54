"""Benchmarks of marketlake (see README.md); run as ``python -m benchmarks.<name>``."""
