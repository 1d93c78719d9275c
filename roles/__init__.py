"""Ray roles: plain classes, one per file; `group.py` turns them into named actors."""
