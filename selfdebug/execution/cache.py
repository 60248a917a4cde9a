"""Content-addressed verdicts: (program, tests, limits) -> ExecResult.

Sampling repeats programs, and a replayed evaluation must give the same verdicts, so each verdict is kept
under the SHA-256 of everything that decides it. In memory always; in a SQLite file when a path is given.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from selfdebug.execution.spec import ExecResult, TestSuite


class ResultCache:
    def __init__(self, path: str | None = None):
        self._memory: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._db = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, result TEXT NOT NULL)")

    @staticmethod
    def key(program: str, tests: TestSuite, limits: dict) -> str:
        blob = json.dumps([program, tests.to_dict(), limits], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def get(self, key: str) -> ExecResult | None:
        with self._lock:
            d = self._memory.get(key)
            if d is None and self._db is not None:
                row = self._db.execute("SELECT result FROM verdicts WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    d = self._memory[key] = json.loads(row[0])
        return None if d is None else ExecResult.from_dict(d)

    def put(self, key: str, result: ExecResult) -> None:
        d = result.to_dict()
        d["cached"] = False
        with self._lock:
            self._memory[key] = d
            if self._db is not None:
                self._db.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(d)))

    def __len__(self) -> int:
        return len(self._memory)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
