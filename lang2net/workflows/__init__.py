"""Workflows built on the library: recipes, meta-training (accelerate) and zero-shot evaluation with baselines."""
