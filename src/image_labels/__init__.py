"""Image-level labels: test-time augmentation of image probabilities, fitted per-class thresholds, prediction."""
