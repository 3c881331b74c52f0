"""Reading microscopy stacks and writing segmentation results."""
