"""Reading finished runs: the report, sweep summaries, the W&B dashboard and human rating sheets."""
