"""Input and output: checkpoints and exported models."""
