"""Unit tests: in-process, no moto and no service process; seconds in all (`python -m tests unit`)."""
