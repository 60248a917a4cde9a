"""``python -m selfdebug.evaluate``."""

from selfdebug.evaluate.app import main

main()
