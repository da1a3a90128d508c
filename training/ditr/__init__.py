"""DITR / D-DITR: per-point 2D features, distillation pretraining, segmentation
training and evaluation of the sparse U-Net."""
