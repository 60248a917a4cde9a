"""selfdebug: train and evaluate code LLMs that debug their own code and explain the bug."""

__version__ = "0.1.0"
