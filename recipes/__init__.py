"""Recipes: one driver per algorithm family, shaped like the algorithm."""
