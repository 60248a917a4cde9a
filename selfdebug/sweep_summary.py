"""``python -m selfdebug.sweep_summary``: runs :mod:`selfdebug.analysis.sweep_summary`."""

if __name__ == "__main__":
    import sys

    from selfdebug.analysis.sweep_summary import main

    sys.exit(main())
