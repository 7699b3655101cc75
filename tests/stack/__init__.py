"""Tests that start processes: moto, the web tier, workers, the whole local stack (each class a process
of its own in `python -m tests`)."""
