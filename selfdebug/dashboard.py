"""``python -m selfdebug.dashboard``: runs :mod:`selfdebug.analysis.dashboard` (conf/dashboard.yaml)."""

if __name__ == "__main__":
    from selfdebug.analysis.dashboard import main

    main()
