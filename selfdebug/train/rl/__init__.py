"""PPO from the SFT model with the span-level composite reward."""
