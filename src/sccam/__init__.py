"""SC-CAM rounds: backbone features of every training image and per-class k-means sub-category labels.

Modules: ``features`` (extraction, torch), ``feature_files`` (their files), ``sub_labels`` (k-means and the
sub-label table). They are imported one by one so the k-means step never loads torch.
"""
