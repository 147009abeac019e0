"""Leaf helpers every layer may use: atomic writes and argument checks (they import nothing from lang2net)."""
