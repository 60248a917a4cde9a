"""Sandbox-side Python that generated test setups start with (read as text by ``problems.testcode``).

These files are never imported by selfdebug: each is inserted into a test setup and runs in the judge's
child process, after the program under test, in its namespace. Their names start with ``_sd_`` so they
cannot clash with the program's. ``data.py`` comes first in every setup that uses them; the setup defines
the tables they read (``_sd_inputs``, ``_sd_outputs``) and settings (``_sd_atol``, ...) after them.
"""
