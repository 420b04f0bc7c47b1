"""Placeholder; the simulated plant is being written."""
