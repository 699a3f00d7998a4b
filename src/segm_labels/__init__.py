"""Stage-2 targets: segmentation labels built from CAM pseudo labels, and the per-cell validation of a U-Net."""
