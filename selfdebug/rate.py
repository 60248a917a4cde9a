"""``python -m selfdebug.rate``: runs :mod:`selfdebug.analysis.rate` (conf/rate.yaml)."""

if __name__ == "__main__":
    from selfdebug.analysis.rate import main

    main()
