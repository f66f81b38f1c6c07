"""Segmentation networks: frames + audio → per-pixel scores (and mask-classification predictions)."""
