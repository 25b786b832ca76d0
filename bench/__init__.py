"""Benchmarks: `make bench` (python -m bench) prints the course's figures and budgets."""
