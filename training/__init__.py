"""QC-StyleGAN networks, checkpoints, losses, datasets and the training loop."""
