"""Roles: plain classes, one per file; the executors (`ray_executor.py`, `inprocess.py`) start them, the rank group fans calls out to a role's ranks."""
