"""avtoolkit: PyTorch Lightning toolkit for audio-visual segmentation and source separation."""

__version__ = "0.1.0"
