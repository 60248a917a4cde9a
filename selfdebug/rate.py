"""``python -m selfdebug.rate``: runs :mod:`selfdebug.analysis.rate`."""

if __name__ == "__main__":
    from selfdebug.analysis.rate import main

    main()
