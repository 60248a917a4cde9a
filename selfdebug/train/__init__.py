"""Training stages as Lightning modules: SFT and PPO, and the lifecycle they share (``python -m selfdebug.train``)."""
