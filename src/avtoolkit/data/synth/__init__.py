"""Offline real-media synthetic audio-visual datasets in the official layouts (specs/data.md)."""
