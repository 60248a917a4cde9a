"""``python -m selfdebug.sweep_summary``: runs :mod:`selfdebug.analysis.sweep_summary` (conf/sweep_summary.yaml)."""

if __name__ == "__main__":
    from selfdebug.analysis.sweep_summary import main

    main()
