"""Benchmarks: how fast the system moves work, side by side with bare Celery and a
database-polling queue. `python -m bench.run_all` (or `make bench`) runs them all."""
