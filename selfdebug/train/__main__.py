"""``python -m selfdebug.train``."""

from selfdebug.train.app import main

main()
