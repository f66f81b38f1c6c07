"""Separation networks: spectrogram + per-source visual input → per-source mask logits."""
