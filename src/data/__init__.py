"""Kaggle-layout HPA data: channels, labels, folds, atomic file writes."""
