"""Figures, reports and notebooks, derived only from the files of a run directory."""
