"""Training: the LightningModule, the HPA DataModule with its image cache, and augmentations."""
