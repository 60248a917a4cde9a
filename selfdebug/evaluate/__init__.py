"""Self-debugging evaluation: the protocol, pass@k and the explanation judge (``python -m selfdebug.evaluate``)."""
