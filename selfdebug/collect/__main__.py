"""``python -m selfdebug.collect``."""

from selfdebug.collect.app import main

main()
