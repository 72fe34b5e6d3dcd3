"""segdistill: knowledge distillation for semantic segmentation on PaddleSeg, as a reproducible study."""

__version__ = "0.1.0"
