"""ltcl: contrastive representation learning on long-tailed image data."""

__version__ = "0.1.0"
