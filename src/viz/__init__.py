"""Pictures: HPA-style display of four-channel images."""
