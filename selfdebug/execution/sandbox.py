"""Run untrusted programs against their tests, safely and fast.

    with Sandbox(timeout=5) as sb:
        result = sb.run(program, tests)                 # one ExecResult
        results = sb.run_batch([(p, tests) for p in programs])
        future = sb.submit(program, tests)              # overlaps judging with other work

A pool of lean worker processes (``_worker.py``, standard library only) is started once, each inside its own
network, mount and PID namespaces when ``unshare`` allows it. Each program then runs in a fresh fork of a
worker: its own process group and session, limits on CPU time, address space, file size, processes and open
files, an unprivileged user of its own, a private working directory on a tmpfs, an environment with nothing
but PATH and locale, a read-only view of every file system and no network. Verdicts are cached by content.
A program cannot forge its verdict: records are authenticated, an audit hook keeps it from the judge, and
asserts compare plain data; an attempt is status ``blocked`` (docs/sandbox.md says what this does not cover).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import struct
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from selfdebug.core.errors import ConfigError, SelfDebugError
from selfdebug.execution.cache import ResultCache
from selfdebug.execution.spec import ERROR, NO_CODE, STATUSES, TIMEOUT, ExecResult, TestSuite

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
ISOLATION_MODES = ("auto", "namespaces", "none")


class SandboxUnavailable(SelfDebugError):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation. Every field is a Hydra key under ``sandbox.``."""

    workers: int = 0  # 0: one per CPU core
    timeout: float = 10.0  # wall-clock seconds per program run (per test case for stdin/stdout tests)
    memory_mb: int = 2048  # address-space limit
    max_processes: int = 32  # processes the job user may have at once (fork bombs stop here)
    max_file_mb: int = 16  # largest file a program may write
    max_output_bytes: int = 4 << 20  # stdout/stderr kept; more ends the run with status output_limit
    max_feedback_chars: int = 2000  # bound on the feedback text a model sees
    isolation: str = "auto"  # auto: namespaces if available; namespaces: required; none: limits only
    allow_unisolated: bool = False  # with auto, go on without network/file-system isolation (loudly)
    tmpfs_mb: int = 512  # size of each worker's private tmpfs for job directories
    base_uid: int = 61000  # job users are base_uid + 64 * (pid % 4096) + worker index (when running as root)
    cache: bool = True
    cache_path: str | None = None  # a SQLite file that keeps verdicts across runs; None: memory only

    def __post_init__(self) -> None:
        checks = [("timeout", self.timeout > 0), ("memory_mb", self.memory_mb >= 64),
                  ("max_processes", self.max_processes >= 1), ("max_file_mb", self.max_file_mb >= 1),
                  ("max_output_bytes", self.max_output_bytes >= 1024), ("workers", self.workers >= 0),
                  ("max_feedback_chars", self.max_feedback_chars >= 100), ("tmpfs_mb", self.tmpfs_mb >= 16),
                  ("workers", self.workers <= 64)]
        for key, ok in checks:
            if not ok:
                raise ConfigError(f"sandbox.{key} = {getattr(self, key)!r} is out of range "
                                  f"(see selfdebug/execution/sandbox.py:SandboxConfig)")
        if self.isolation not in ISOLATION_MODES:
            raise ConfigError(f"sandbox.isolation = {self.isolation!r}; choose one of {ISOLATION_MODES}")

    def limits(self) -> dict:
        keys = ("timeout", "memory_mb", "max_processes", "max_file_mb", "max_output_bytes", "max_feedback_chars")
        return {k: getattr(self, k) for k in keys}


class _WorkerDied(Exception):
    pass


class _WorkerProcess:
    """One worker: a child process spoken to with length-prefixed JSON."""

    def __init__(self, index: int, command: list[str], env: dict, reply_slack: float):
        self.index, self.command, self.env, self.reply_slack = index, command, env, reply_slack
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=self.env, close_fds=True,
                                     start_new_session=True)
        self.hello = self._receive(timeout=60)
        if not self.hello.get("ready"):
            self.stop()
            raise SandboxUnavailable(self.hello.get("error", "sandbox worker failed to start"))

    def request(self, job: dict, timeout: float) -> dict:
        payload = json.dumps(job).encode()
        try:
            self.proc.stdin.write(struct.pack("!I", len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerDied(f"worker {self.index} is gone: {exc}") from exc
        return self._receive(timeout + self.reply_slack)

    def _receive(self, timeout: float) -> dict:
        import select

        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = bytearray()
        need = 4
        header_done = False
        while len(data) < need:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise _WorkerDied(f"worker {self.index} did not answer within {timeout:.0f}s")
            chunk = os.read(fd, need - len(data))
            if not chunk:
                raise _WorkerDied(f"worker {self.index} exited (code {self.proc.poll()})")
            data += chunk
            if not header_done and len(data) == 4:
                need = 4 + struct.unpack("!I", bytes(data))[0]
                header_done = True
        return json.loads(bytes(data[4:]))

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None


def _namespace_command() -> list[str] | None:
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    cmd = [unshare, "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        cmd[1:1] = ["--user", "--map-root-user"]
    return cmd


def _worker_env() -> dict:
    # The whole environment the workers (and so every program) will ever see: no keys, no tokens.
    keep = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("LANG", "C.UTF-8")
    env.update(PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


class Sandbox:
    """A pool of isolated workers. Use as a context manager, or call ``close()``."""

    def __init__(self, config: SandboxConfig | None = None, **overrides):
        if config is None:
            config = SandboxConfig(**overrides)
        elif overrides:
            config = SandboxConfig(**{**asdict(config), **overrides})
        self.config = config
        self.n_workers = config.workers or os.cpu_count() or 1
        self.cache = ResultCache(config.cache_path) if config.cache else None
        self.counts = {"executed": 0, "cache_hits": 0, "cache_misses": 0, "timeouts": 0, "errors": 0,
                       "worker_restarts": 0, **{f"status/{s}": 0 for s in STATUSES}}
        self._lock = threading.Lock()
        self._workers = self._start_workers()
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._executor = ThreadPoolExecutor(max_workers=self.n_workers, thread_name_prefix="sandbox")
        self._closed = False

    # ------------------------------------------------------------------ start-up
    def _start_workers(self) -> list[_WorkerProcess]:
        mode = self.config.isolation
        prefix = _namespace_command() if mode in ("auto", "namespaces") else None
        reason = "the `unshare` command (util-linux) is not installed" if prefix is None else ""
        workers: list[_WorkerProcess] = []
        if prefix is not None:
            try:
                workers = [self._spawn(i, prefix, isolate=True) for i in range(self.n_workers)]
            except (SandboxUnavailable, _WorkerDied, OSError) as exc:
                for w in workers:
                    w.stop()
                workers, reason = [], str(exc)
        if workers:
            self.isolated = True
            leaks = workers[0].hello.get("writable_mounts") or []
            if leaks:
                log.warning("sandbox: these mounts stayed writable inside the sandbox: %s", leaks)
            return workers
        if mode == "namespaces" or (mode == "auto" and not self.config.allow_unisolated):
            raise SandboxUnavailable(
                f"cannot isolate programs (network, file system, processes): {reason}. Run as root or enable "
                "unprivileged user namespaces, or set sandbox.allow_unisolated=true (or sandbox.isolation=none) "
                "to run with resource limits only.")
        message = (f"SANDBOX NOT ISOLATED: {reason or 'sandbox.isolation=none'}. Programs run with resource "
                   "limits only: they can reach the network and write wherever this user can.")
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.isolated = False
        return [self._spawn(i, [], isolate=False) for i in range(self.n_workers)]

    def _spawn(self, index: int, prefix: list[str], isolate: bool) -> _WorkerProcess:
        # Job users are unique to this process, so two sandboxes on one machine never share one (a job's
        # clean-up kills every process of its user).
        uid = self.config.base_uid + (os.getpid() % 4096) * 64 + index if os.geteuid() == 0 else None
        worker_config = {"isolate": isolate, "uid": uid, "tmpfs_mb": self.config.tmpfs_mb,
                         "scratch": "/tmp" if isolate else None}
        command = [*prefix, sys.executable, "-I", "-S", str(WORKER_SCRIPT), json.dumps(worker_config)]
        return _WorkerProcess(index, command, _worker_env(), reply_slack=30.0)

    # ------------------------------------------------------------------ running
    def run(self, program: str | None, tests: TestSuite, timeout: float | None = None) -> ExecResult:
        """Judge one program. ``timeout`` (seconds) overrides ``config.timeout`` for this run only."""
        return self._judge(program, tests, timeout)

    def submit(self, program: str | None, tests: TestSuite, timeout: float | None = None) -> Future:
        if self._closed:
            raise RuntimeError("the sandbox is closed")
        return self._executor.submit(self._judge, program, tests, timeout)

    def run_batch(self, items, progress: bool | str = False) -> list[ExecResult]:
        """Judge ``(program, tests)`` or ``(program, tests, timeout)`` items concurrently; results in input order."""
        items = list(items)
        futures = [self.submit(*item) for item in items]
        if progress:
            from tqdm.auto import tqdm

            desc = progress if isinstance(progress, str) else "judging"
            with tqdm(total=len(futures), desc=desc, unit="prog") as bar:
                for f in futures:
                    f.add_done_callback(lambda _: bar.update(1))
                return [f.result() for f in futures]
        return [f.result() for f in futures]

    def _judge(self, program: str | None, tests: TestSuite, timeout: float | None = None) -> ExecResult:
        result = self._verdict(program, tests, timeout)
        with self._lock:  # every verdict handed out, cached or not: what a caller (PPO's logs) saw
            self.counts[f"status/{result.status}"] = self.counts.get(f"status/{result.status}", 0) + 1
        return result

    def _verdict(self, program: str | None, tests: TestSuite, timeout: float | None = None) -> ExecResult:
        if not program or not program.strip():
            return ExecResult(status=NO_CODE, n_passed=0, n_tests=tests.n_tests,
                              feedback="No code was found in the completion.",
                              test_results=[False] * tests.n_tests)
        if tests.n_tests == 0:
            raise SelfDebugError("a problem has no tests: nothing to judge the program against")
        limits = self.config.limits()
        if timeout is not None:
            if not timeout > 0:
                raise ConfigError(f"a per-run timeout must be positive, got {timeout!r}")
            limits["timeout"] = float(timeout)
        key = ResultCache.key(program, tests, limits) if self.cache is not None else None
        if key is not None:
            hit = self.cache.get(key)
            with self._lock:
                self.counts["cache_hits" if hit else "cache_misses"] += 1
            if hit is not None:
                hit.cached = True
                return hit
        job = {"program": program, "kind": tests.kind, "setup": tests.setup, "asserts": list(tests.asserts),
               "stdio": [list(p) for p in tests.stdio], "limits": limits}
        result = ExecResult(**self._dispatch(job, limits["timeout"] * max(1, len(tests.stdio))))
        with self._lock:
            self.counts["executed"] += 1
            self.counts["timeouts"] += result.status == TIMEOUT
            self.counts["errors"] += result.status == ERROR
        if key is not None and not result.feedback.startswith("sandbox worker"):
            self.cache.put(key, result)
        return result

    def _dispatch(self, job: dict, timeout: float) -> dict:
        worker = self._idle.get()
        try:
            return worker.request(job, timeout)
        except _WorkerDied as exc:
            log.warning("sandbox: %s; restarting it", exc)
            with self._lock:
                self.counts["worker_restarts"] += 1
            worker.stop()
            worker.start()
            n = len(job["asserts"]) if job["kind"] == "assert" else len(job["stdio"])
            return {"status": ERROR, "n_passed": 0, "n_tests": n, "feedback": f"sandbox worker failure: {exc}",
                    "test_results": [False] * n}
        finally:
            self._idle.put(worker)

    # ------------------------------------------------------------------ stats and shutdown
    @property
    def job_uids(self) -> list[int]:
        """The users programs run as (empty when not running as root)."""
        return [w.hello["uid"] for w in self._workers if w.hello.get("uid") is not None]

    def stats(self) -> dict:
        with self._lock:
            return dict(self.counts, workers=self.n_workers, isolated=self.isolated)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        for w in self._workers:
            w.stop()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
