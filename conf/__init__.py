"""Hydra configs shipped with the package (conf/ in the repository)."""
