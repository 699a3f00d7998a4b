"""Single-cell representations: cell embeddings from any checkpoint or hand-crafted features, per-image profiles,
and the field's evaluations (NSC/NSCB 1-NN, linear probe, SIFLoc's bag-level scores)."""
