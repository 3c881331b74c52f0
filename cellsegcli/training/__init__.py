"""Training: annotated folders, augmentation, loss, the loop, early stopping, checkpoints."""
