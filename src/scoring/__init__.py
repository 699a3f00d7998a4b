"""Per-cell confidences from class maps and image probabilities, and the per-image scoring job."""
