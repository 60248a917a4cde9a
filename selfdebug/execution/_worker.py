"""A lean sandbox worker: imports nothing but the standard library.

The Sandbox starts a few of these once (inside fresh network, mount and PID namespaces when it can) and
sends them jobs over a pipe. For every program the worker forks a child that sets its own process group,
resource limits and an unprivileged user, runs the program and its tests, and streams one record per test
over a private pipe. The worker alone decides the verdict from those records and the child's exit, so a
program that exits early, or kills itself, cannot look like a pass.

Run as ``python -I -S _worker.py CONFIG_JSON``; it speaks length-prefixed JSON on its stdin and stdout.
``-S`` skips the ``.pth`` start-up hooks of site-packages (they made every fork ~40% slower); the
site-packages folders themselves are put on ``sys.path`` so programs can still import numpy and the like.
"""

from __future__ import annotations

import ast
import ctypes
import gc
import io
import json
import linecache
import os
import resource
import select
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import traceback

# Modules a solution commonly imports, loaded once here so that every forked child already has them.
# Few on purpose: every page the worker maps makes each fork slower.
_PRELOAD = "bisect collections copy functools heapq itertools math operator re string".split()

RESULT_FD = 255  # the child's private channel for per-test records; out of the way of the program's fds
CLEAN_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
_MOUNT_FLAG_BY_OPTION = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                         "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME,
                         "strictatime": MS_STRICTATIME}


# ----------------------------------------------------------------------------------------------------
# Namespace set-up: everything read-only, a private tmpfs for job directories.
# ----------------------------------------------------------------------------------------------------

def _libc_mount(source, target, fstype, flags, data=None):
    libc = ctypes.CDLL(None, use_errno=True)
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    if libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mounts():
    """(mount point, per-mount options) from /proc/self/mountinfo, with octal escapes decoded."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode()
            out.append((point, fields[5].split(",")))
    return out


def _expose_hidden_paths(paths, scratch):
    """Keep the interpreter readable for the unprivileged job user.

    When an ancestor of the interpreter's prefix is private (``/root`` is mode 700 on many machines), a
    tmpfs replaces that ancestor inside this mount namespace and only the needed subtrees are bound back.
    Everything else under the private ancestor stays hidden, which also hides home-directory secrets.
    """
    hidden = {}
    for path in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}):
        parts = path.split(os.sep)
        for i in range(2, len(parts)):
            ancestor = os.sep.join(parts[:i])
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                hidden.setdefault(ancestor, set()).add(path)
                break
    for ancestor, keep in hidden.items():
        if any(a != ancestor and ancestor.startswith(a + os.sep) for a in hidden):
            continue
        keep = {p for p in keep if not any(q != p and p.startswith(q + os.sep) for q in keep)}
        fds = {p: os.open(p, os.O_PATH | os.O_DIRECTORY) for p in keep}
        _libc_mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        for p, fd in fds.items():
            os.makedirs(p, mode=0o755, exist_ok=True)
            _libc_mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)


def setup_namespace(scratch, tmpfs_mb):
    """Make every mount read-only, then mount a private tmpfs at ``scratch``. Returns mounts left writable."""
    _libc_mount(None, "/", None, MS_REC | MS_PRIVATE)
    needed = {sys.prefix, sys.base_prefix, sys.exec_prefix} | {p for p in sys.path if p}
    _expose_hidden_paths(needed, scratch)
    for point, options in _mounts():
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for opt in options:
            flags |= _MOUNT_FLAG_BY_OPTION.get(opt, 0)
        try:
            _libc_mount(None, point, None, flags)
        except OSError:
            pass  # reported below if it stayed writable
    _libc_mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=755")
    visible = dict(_mounts())  # a later line for the same point is the mount stacked on top
    return [p for p, opts in visible.items() if "rw" in opts and p != scratch and not p.startswith("/proc")]


# ----------------------------------------------------------------------------------------------------
# Inside the forked child: run the program and its tests, report each test on RESULT_FD.
# ----------------------------------------------------------------------------------------------------

def _set_limits(limits):
    mem = int(limits["memory_mb"]) << 20
    cpu = int(limits["timeout"]) + 1
    for res, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu),
                       (resource.RLIMIT_FSIZE, int(limits["max_file_mb"]) << 20),
                       (resource.RLIMIT_NPROC, int(limits["max_processes"])),
                       (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))


def _register_source(filename, source):
    # Tracebacks of exec'd strings show no lines unless linecache knows the text.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _format_exception(exc, max_frames=5):
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
    lines = ["Traceback (most recent call last):"]
    lines += traceback.format_list(frames[-max_frames:])
    lines.append("".join(traceback.format_exception_only(type(exc), exc)).rstrip())
    return "".join(x if x.endswith("\n") else x + "\n" for x in lines).rstrip()


def _value_text(node, namespace):
    text = repr(eval(compile(ast.Expression(node), "<test>", "eval"), namespace))
    return text if len(text) <= 300 else text[:300] + "..."


def _actual_value_note(test_source, namespace):
    """For ``assert call(...) == expected``, what the call returned, so the model sees the actual output; and
    the expected value too when the test computes it rather than spelling it out."""
    note = ""
    try:
        node = ast.parse(test_source).body[-1]
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare) and len(node.test.ops) == 1:
            left, right = node.test.left, node.test.comparators[0]
            if isinstance(left, ast.Call):
                note = "\nActual output: " + _value_text(left, namespace)
                try:
                    ast.literal_eval(right)
                except ValueError:
                    note += "\nExpected output: " + _value_text(right, namespace)
    except BaseException:  # noqa: BLE001 - the note is best effort; the verdict is already decided
        pass
    return note


def _child_harness(job, channel_write, write, exit_now):
    """Runs in the forked child. ``channel_write``/``write``/``exit_now`` were bound before any program
    code runs, so a program that patches ``os`` or ``json`` cannot forge or suppress records."""
    import builtins

    dumps = json.dumps

    def report(record):
        write(channel_write, (dumps(record) + "\n").encode())

    program = job["program"]
    stdio = job["kind"] == "stdio"
    _register_source("<solution>", program)
    try:
        code = compile(program, "<solution>", "exec")
    except (SyntaxError, ValueError) as exc:
        report({"event": "syntax_error", "feedback": _format_exception(exc) if not isinstance(exc, SyntaxError)
                else "".join(traceback.format_exception_only(type(exc), exc)).rstrip()})
        exit_now(0)
    saved_builtins = dict(builtins.__dict__)
    namespace = {"__name__": "__main__" if stdio else "__solution__", "__builtins__": builtins}
    try:
        exec(code, namespace)
    except SystemExit as exc:
        if not stdio:
            report({"event": "program_error", "error": "SystemExit",
                    "feedback": f"The program called exit ({exc.code!r}) before the tests ran."})
            exit_now(0)
    except BaseException as exc:  # noqa: BLE001 - any failure of model code is a verdict, not a crash
        report({"event": "program_error", "error": type(exc).__name__, "feedback": _format_exception(exc)})
        exit_now(0)
    if stdio:
        try:
            sys.stdout.flush()
        except BaseException:  # noqa: BLE001
            pass
        report({"event": "done"})
        exit_now(0)

    # Undo whatever the program did to the builtins the tests rely on (abs, len, isinstance, ...).
    for key in [k for k in builtins.__dict__ if k not in saved_builtins]:
        del builtins.__dict__[key]
    builtins.__dict__.update(saved_builtins)
    namespace["__builtins__"] = builtins
    if job["setup"]:
        _register_source("<setup>", job["setup"])
        try:
            exec(compile(job["setup"], "<setup>", "exec"), namespace)
        except BaseException as exc:  # noqa: BLE001
            report({"event": "program_error", "error": type(exc).__name__,
                    "feedback": "The test set-up failed:\n" + _format_exception(exc)})
            exit_now(0)
    for index, test in enumerate(job["asserts"]):
        filename = f"<test {index}>"
        _register_source(filename, test)
        try:
            exec(compile(test, filename, "exec"), namespace)
            report({"event": "test", "index": index, "ok": True})
        except AssertionError:
            report({"event": "test", "index": index, "ok": False, "error": "AssertionError",
                    "feedback": f"Failed test: {test.strip()}" + _actual_value_note(test, namespace)})
        except BaseException as exc:  # noqa: BLE001 - SystemExit inside a test is a failed test
            report({"event": "test", "index": index, "ok": False, "error": type(exc).__name__,
                    "feedback": f"Failed test: {test.strip()}\n" + _format_exception(exc)})
    report({"event": "done"})
    exit_now(0)


def _enter_child(job, uid, job_dir, stdin_path, out_w, err_w, res_w):
    """Everything between fork and running model code. Never returns."""
    try:
        os.setsid()
        os.dup2(res_w, RESULT_FD)
        stdin_fd = os.open(stdin_path or os.devnull, os.O_RDONLY)
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, RESULT_FD)
        os.closerange(RESULT_FD + 1, 4096)
        os.chdir(job_dir)
        _set_limits(job["limits"])
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.umask(0o077)
        env = {k: os.environ[k] for k in CLEAN_ENV_KEYS if k in os.environ}
        env.update(HOME=job_dir, TMPDIR=job_dir, PYTHONIOENCODING="utf-8")
        os.environ.clear()
        os.environ.update(env)
        tempfile.tempdir = job_dir
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8", errors="replace")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="replace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="replace",
                                      write_through=True)
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        _child_harness(job, RESULT_FD, os.write, os._exit)
    except BaseException:  # noqa: BLE001
        pass
    os._exit(70)


# ----------------------------------------------------------------------------------------------------
# In the worker: fork, supervise, kill, decide the verdict.
# ----------------------------------------------------------------------------------------------------

def _set_nonblocking(fd):
    os.set_blocking(fd, False)


class Worker:
    def __init__(self, config):
        self.uid = config.get("uid")
        self.isolated = bool(config.get("isolate"))
        self.scratch = config.get("scratch") or tempfile.gettempdir()
        self.jobs = 0

    # One program run: fork, stream its pipes until it exits or the deadline passes.
    def run_child(self, job, stdin_data):
        self.jobs += 1
        job_dir = os.path.join(self.scratch, f"job-{os.getpid()}-{self.jobs}")
        os.mkdir(job_dir, 0o700)
        stdin_path = None
        if stdin_data is not None:
            stdin_path = os.path.join(job_dir, ".stdin")
            with open(stdin_path, "w", encoding="utf-8") as f:
                f.write(stdin_data)
            os.chmod(stdin_path, 0o400)
        if self.uid is not None:
            for p in (job_dir, stdin_path):
                if p:
                    os.chown(p, self.uid, self.uid)
        pipes = [os.pipe() for _ in range(3)]
        limits = job["limits"]
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _enter_child(job, self.uid, job_dir, stdin_path, pipes[0][1], pipes[1][1], pipes[2][1])
        for _, w in pipes:
            os.close(w)
        readers = [r for r, _ in pipes]
        try:
            outcome = self._supervise(pid, readers, start + float(limits["timeout"]), limits)
        finally:
            self._kill_leftovers(pid)
            for r in readers:
                os.close(r)
            shutil.rmtree(job_dir, ignore_errors=True)
        outcome["duration"] = time.monotonic() - start
        return outcome

    def _supervise(self, pid, readers, deadline, limits):
        out_r, err_r, res_r = readers
        caps = {out_r: int(limits["max_output_bytes"]), err_r: int(limits["max_output_bytes"]),
                res_r: 64 << 20}
        bufs = {fd: bytearray() for fd in readers}
        for fd in readers:
            _set_nonblocking(fd)
        pidfd = os.pidfd_open(pid)
        open_fds = set(readers)
        timed_out = overflow = False
        status = None
        try:
            while status is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                ready, _, _ = select.select(list(open_fds) + [pidfd], [], [], remaining)
                for fd in ready:
                    if fd == pidfd:
                        status = os.waitpid(pid, 0)[1]
                    elif not self._read_into(fd, bufs[fd], caps[fd]):
                        open_fds.discard(fd)
                if any(len(bufs[fd]) >= caps[fd] for fd in (out_r, err_r)):
                    overflow = True
                    break
        finally:
            os.close(pidfd)
        if status is None:
            self._kill_group(pid)
            status = os.waitpid(pid, 0)[1]
        for fd in open_fds:  # whatever the child wrote just before it exited
            self._read_into(fd, bufs[fd], caps[fd])
        return {"status_code": status, "timed_out": timed_out, "overflow": overflow,
                "stdout": bytes(bufs[out_r]), "stderr": bytes(bufs[err_r]), "records": bytes(bufs[res_r])}

    @staticmethod
    def _read_into(fd, buf, cap):
        """Read what is there; False at end of file. Bytes past ``cap`` are dropped."""
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            room = cap - len(buf)
            if room > 0:
                buf += chunk[:room]
            if len(chunk) < 1 << 16:
                return True

    @staticmethod
    def _kill_group(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    def _kill_leftovers(self, pid):
        """No process of a job outlives it, even one that left the process group with setsid."""
        self._kill_group(pid)
        if self.isolated:
            # We are PID 1 of our own namespace: any other process here belongs to the job just run.
            for _ in range(100):
                others = [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != os.getpid()]
                if not others:
                    break
                self._kill_all_of_job_user(others)
                self._reap()
        else:
            self._kill_all_of_job_user([])
        self._reap()

    def _kill_all_of_job_user(self, pids):
        if self.uid is None:
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            return
        killer = os.fork()
        if killer == 0:
            try:
                os.setuid(self.uid)
                os.kill(-1, signal.SIGKILL)  # every process of the job user at once; forks cannot outrun it
            except BaseException:  # noqa: BLE001
                pass
            os._exit(0)
        os.waitpid(killer, 0)

    @staticmethod
    def _reap():
        # Collect anything re-parented to us (we are PID 1 of our namespace when isolated).
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    return
            except ChildProcessError:
                return

    # The verdict for one job.
    def run_job(self, job):
        limits = job["limits"]
        if job["kind"] == "stdio":
            return self._run_stdio(job, limits)
        outcome = self.run_child(job, None)
        return self._assert_verdict(job, outcome, limits)

    @staticmethod
    def _records(outcome):
        records = []
        for line in outcome["records"].decode("utf-8", "replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
        return records

    @staticmethod
    def _exit_note(code):
        if os.WIFSIGNALED(code):
            sig = os.WTERMSIG(code)
            if sig == signal.SIGXCPU:
                return "timeout", "The program exceeded its CPU time limit."
            return "error", f"The program was killed by signal {signal.Signals(sig).name}."
        return "error", f"The program exited with status {os.WEXITSTATUS(code)} before the tests finished."

    def _assert_verdict(self, job, outcome, limits):
        n_tests = len(job["asserts"])
        results = [False] * n_tests
        feedback, errors, done = "", set(), False
        status = None
        for rec in self._records(outcome):
            event = rec.get("event")
            if event == "syntax_error":
                status, feedback = "syntax_error", rec.get("feedback", "")
            elif event == "program_error":
                status, feedback = ("memory" if rec.get("error") == "MemoryError" else "error"), rec.get("feedback", "")
            elif event == "test" and isinstance(rec.get("index"), int) and 0 <= rec["index"] < n_tests:
                results[rec["index"]] = rec.get("ok") is True
                if rec.get("ok") is not True:
                    errors.add(rec.get("error"))
                    feedback = feedback or rec.get("feedback", "")
            elif event == "done":
                done = True
        if status is None:
            if outcome["timed_out"]:
                status = "timeout"
                feedback = feedback or f"Timed out after {limits['timeout']:g} seconds."
            elif outcome["overflow"]:
                status, feedback = "output_limit", f"The program printed more than {limits['max_output_bytes']} bytes."
            elif not done:
                status, note = self._exit_note(outcome["status_code"])
                feedback = feedback or note
            elif all(results):
                status = "passed"
            elif "MemoryError" in errors:
                status = "memory"
            else:
                status = "failed" if errors <= {"AssertionError"} else "error"
        return self._result(status, results, feedback, outcome, limits)

    @staticmethod
    def _result(status, results, feedback, outcome, limits):
        cap = int(limits["max_feedback_chars"])
        if len(feedback) > cap:
            feedback = feedback[:cap] + "\n... (truncated)"
        text = lambda b: b[:cap].decode("utf-8", "replace")  # noqa: E731
        return {"status": status, "n_passed": sum(results), "n_tests": len(results), "feedback": feedback,
                "stdout": text(outcome.get("stdout", b"")), "stderr": text(outcome.get("stderr", b"")),
                "test_results": results, "duration": outcome.get("duration", 0.0)}

    def _run_stdio(self, job, limits):
        results, feedback, status, last = [], "", None, {}
        for test_input, expected in job["stdio"]:
            if status == "timeout":  # one slow case predicts the rest; do not spend a timeout on each
                results.append(False)
                continue
            outcome = self.run_child(job, test_input)
            last = outcome
            records = self._records(outcome)
            events = {r.get("event"): r for r in records}
            actual = outcome["stdout"].decode("utf-8", "replace")
            ok = False
            if "syntax_error" in events:
                status, feedback = "syntax_error", events["syntax_error"].get("feedback", "")
                results = [False] * len(job["stdio"])
                break
            if outcome["timed_out"]:
                status = "timeout"
                feedback = feedback or f"Timed out after {limits['timeout']:g} seconds on input:\n{_clip(test_input)}"
            elif outcome["overflow"]:
                status = status or "output_limit"
                feedback = feedback or f"The program printed more than {limits['max_output_bytes']} bytes."
            elif "program_error" in events:
                rec = events["program_error"]
                status = status or ("memory" if rec.get("error") == "MemoryError" else "error")
                feedback = feedback or f"Input:\n{_clip(test_input)}\n{rec.get('feedback', '')}"
            elif "done" not in events:
                kind, note = self._exit_note(outcome["status_code"])
                status = status or kind
                feedback = feedback or note
            else:
                ok = outputs_match(actual, expected)
                if not ok:
                    status = status or "failed"
                    feedback = feedback or (f"Failed test:\nInput:\n{_clip(test_input)}\nExpected output:\n"
                                            f"{_clip(expected)}\nActual output:\n{_clip(actual)}")
            results.append(ok)
        return self._result(status or "passed", results, feedback, last, limits)


def _clip(text, limit=300):
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[:limit] + "..."


def outputs_match(actual, expected, tol=1e-6):
    """stdout equals the expected output up to trailing whitespace, or token by token with numeric tolerance."""
    norm = lambda s: [line.rstrip() for line in s.strip().splitlines()]  # noqa: E731
    if norm(actual) == norm(expected):
        return True
    a, e = actual.split(), expected.split()
    if len(a) != len(e):
        return False
    for x, y in zip(a, e):
        if x == y:
            continue
        try:
            fx, fy = float(x), float(y)
        except ValueError:
            return False
        if abs(fx - fy) > tol * max(1.0, abs(fy)):
            return False
    return True


# ----------------------------------------------------------------------------------------------------
# The request loop.
# ----------------------------------------------------------------------------------------------------

def _read_exact(fd, n):
    data = bytearray()
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def _send(fd, message):
    payload = json.dumps(message).encode()
    os.write(fd, struct.pack("!I", len(payload)))
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _add_site_packages():
    import site

    for path in site.getsitepackages():
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)


def main():
    config = json.loads(sys.argv[1])
    _add_site_packages()
    # Keep the protocol off fds 0 and 1 so no job can read requests or write replies.
    req_fd, resp_fd = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    for module in _PRELOAD:
        try:
            __import__(module)
        except ImportError:
            pass
    writable = []
    if config.get("isolate"):
        try:
            writable = setup_namespace(config["scratch"], int(config.get("tmpfs_mb", 256)))
        except OSError as exc:
            _send(resp_fd, {"ready": False, "error": f"namespace set-up failed: {exc}"})
            return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    gc.collect()
    gc.freeze()  # keeps the collector from touching (and so copying) the worker's pages in every fork
    worker = Worker(config)
    _send(resp_fd, {"ready": True, "pid": os.getpid(), "writable_mounts": writable,
                    "uid": worker.uid, "isolated": worker.isolated})
    while True:
        header = _read_exact(req_fd, 4)
        if header is None:
            return 0
        job = json.loads(_read_exact(req_fd, struct.unpack("!I", header)[0]))
        try:
            reply = worker.run_job(job)
        except Exception as exc:  # noqa: BLE001 - a worker bug must not take the pool down
            reply = {"status": "error", "n_passed": 0, "n_tests": len(job.get("asserts") or job.get("stdio") or ()),
                     "feedback": f"sandbox worker error: {exc!r}", "stdout": "", "stderr": "",
                     "test_results": [], "duration": 0.0}
        _send(resp_fd, reply)


if __name__ == "__main__":
    sys.exit(main())
