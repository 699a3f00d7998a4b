"""Stage 2: pseudo-label semantic segmentation (targets from CAM pseudo labels, U-Net, validation per cell)."""
