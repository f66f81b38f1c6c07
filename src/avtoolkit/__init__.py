"""avtoolkit: PyTorch Lightning toolkit for audio-visual segmentation and source separation.

Nothing in the toolkit downloads: encoders start from random weights or load a local file. Importing it sets
``HF_HUB_OFFLINE=1`` unless the variable is already set, because some libraries reach for the Hugging Face hub on
their own (laion-clap's import asks for text tokenizers the audio branch never uses) and, without a network, retry
for minutes before giving up.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
