"""Everything before the model: readers of the published layouts, mixing, datamodules, synthetic data."""
