"""``python -m selfdebug.report``: runs :mod:`selfdebug.analysis.report` (conf/report.yaml)."""

if __name__ == "__main__":
    from selfdebug.analysis.report import main

    main()
