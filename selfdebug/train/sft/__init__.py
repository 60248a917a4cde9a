"""Supervised fine-tuning on verified explanation + refinement trajectories."""
