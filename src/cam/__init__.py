"""Class activation maps and their per-cell scores."""
