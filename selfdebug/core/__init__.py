"""What every stage shares: errors, atomic files and run logging, model loading, prompts, Hydra CLI helpers."""
