"""Synthetic HPA-like benchmark with per-cell truth: cells, nuclei, the 19 protein patterns, Kaggle layout."""

from src.synthetic.config import SyntheticConfig
from src.synthetic.generator import SyntheticImage, generate_image
from src.synthetic.writer import image_id, image_seed, write_dataset

__all__ = ["SyntheticConfig", "SyntheticImage", "generate_image", "image_id", "image_seed", "write_dataset"]
