"""LightningModules, one per problem type: segmentation and separation."""
