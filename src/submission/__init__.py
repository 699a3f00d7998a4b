"""Kaggle submission format: per-cell mask RLE codec and CSV read/write."""
