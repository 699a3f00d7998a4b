"""Weakly supervised single-cell protein localisation for HPA immunofluorescence images."""
