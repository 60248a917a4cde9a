"""The sandbox: verdicts, feedback, caching, and attempts to break each isolation property."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time

import pytest

from selfdebug.core.errors import ConfigError
from selfdebug.execution import Sandbox, SandboxConfig, SandboxUnavailable, TestSuite

ADD_TESTS = TestSuite("assert", asserts=("assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"))
ADD = "def add(a, b):\n    return a + b\n"
BASE_UID = 61000


@pytest.fixture(scope="module")
def sb():
    with Sandbox(workers=2, timeout=2, memory_mb=512, cache=False, base_uid=BASE_UID) as box:
        yield box


def job_user_processes(uids=None) -> list[int]:
    """PIDs on this machine owned by a sandbox job user: there must be none between runs."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
            except (OSError, StopIteration):
                continue
            if (uid in uids) if uids is not None else BASE_UID <= uid < BASE_UID + 64 * 4096:
                found.append(int(name))
    return found


def assert_healthy(sb: Sandbox) -> None:
    """After an attack: the caller runs, every worker still judges correctly within its limit, nothing is left."""
    for _ in range(sb.n_workers * 2):  # reach every worker
        r = sb.run(ADD, ADD_TESTS)
        assert r.passed and r.duration < sb.config.timeout, r  # a verdict inside the limit, not a late kill
    assert job_user_processes(sb.job_uids) == []


# ---------------------------------------------------------------------------------------------- verdicts

def test_passing_program(sb):
    r = sb.run(ADD, ADD_TESTS)
    assert (r.status, r.passed, r.n_passed, r.n_tests, r.test_results) == ("passed", True, 3, 3, [True] * 3)


def test_failed_tests_are_counted_one_by_one_with_actual_output(sb):
    r = sb.run("def add(a, b):\n    return a * b\n", ADD_TESTS)
    assert r.status == "failed" and not r.passed
    assert r.test_results == [False, True, True] and r.n_passed == 2
    assert "Failed test: assert add(1, 2) == 3" in r.feedback
    assert "Actual output: 2" in r.feedback


def test_exception_feedback_shows_the_solution_line(sb):
    r = sb.run("def add(a, b):\n    return a + b + undefined_name\n", ADD_TESTS)
    assert r.status == "error" and r.n_passed == 0
    assert "NameError" in r.feedback and "undefined_name" in r.feedback
    assert '<solution>", line 2' in r.feedback
    assert "_worker.py" not in r.feedback  # the harness's own frames are not the model's business


def test_syntax_error(sb):
    r = sb.run("def add(a, b)\n    return a + b\n", ADD_TESTS)
    assert r.status == "syntax_error" and "SyntaxError" in r.feedback


def test_empty_program_is_no_code(sb):
    assert sb.run("", ADD_TESTS).status == "no_code"
    assert sb.run(None, ADD_TESTS).status == "no_code"


def test_setup_code_runs_after_the_program_and_before_tests(sb):
    tests = TestSuite("assert", setup="class Box:\n    def __init__(self, v):\n        self.v = v\n",
                      asserts=("assert unbox(Box(3)) == 3",))
    assert sb.run("def unbox(b):\n    return b.v\n", tests).passed


def test_feedback_is_bounded():
    with Sandbox(workers=1, timeout=2, max_feedback_chars=200, cache=False) as box:
        r = box.run("def add(a, b):\n    raise ValueError('x' * 5000)\n", ADD_TESTS)
    assert r.status == "error" and len(r.feedback) < 300 and r.feedback.endswith("(truncated)")


def test_stdio_tests(sb):
    tests = TestSuite("stdio", stdio=(("1 2\n", "3\n"), ("5 5\n", "10\n"), ("2 2\n", "5\n")))
    program = "a, b = map(int, input().split())\nprint(a + b)\n"
    r = sb.run(program, tests)
    assert r.status == "failed" and r.test_results == [True, True, False]
    assert "Expected output:\n5" in r.feedback and "Actual output:\n4" in r.feedback
    # For stdin/stdout programs exit(0) is an ordinary way to finish; the output still decides.
    r = sb.run(program + "import sys\nsys.exit(0)\n", TestSuite("stdio", stdio=(("1 2\n", "3\n"),)))
    assert r.passed


def test_stdio_numeric_tolerance_and_trailing_whitespace(sb):
    tests = TestSuite("stdio", stdio=(("", "0.3333333\n"), ("", "a b  \n\n")))
    assert sb.run("print(1/3)", TestSuite("stdio", stdio=(tests.stdio[0],))).passed
    assert sb.run("print('a b')", TestSuite("stdio", stdio=(tests.stdio[1],))).passed


def test_batch_keeps_input_order(sb):
    programs = [f"def add(a, b):\n    return a + b + {i % 3}\n" for i in range(12)]
    results = sb.run_batch([(p, ADD_TESTS) for p in programs])
    assert [r.passed for r in results] == [i % 3 == 0 for i in range(12)]


def test_submit_returns_a_future(sb):
    assert sb.submit(ADD, ADD_TESTS).result(timeout=10).passed


# ---------------------------------------------------------------------------------------------- cache

def test_cache_hits_and_persists(tmp_path):
    path = str(tmp_path / "verdicts.sqlite")
    with Sandbox(workers=1, timeout=2, cache_path=path) as box:
        first = box.run(ADD, ADD_TESTS)
        second = box.run(ADD, ADD_TESTS)
        assert not first.cached and second.cached and second.passed
        assert box.stats()["cache_hits"] == 1 and box.stats()["cache_misses"] == 1
    with Sandbox(workers=1, timeout=2, cache_path=path) as box:
        assert box.run(ADD, ADD_TESTS).cached
        # Different limits decide differently, so they are a different key.
    with Sandbox(workers=1, timeout=3, cache_path=path) as box:
        assert not box.run(ADD, ADD_TESTS).cached


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("key,value", [("timeout", -1), ("timeout", 0), ("memory_mb", 1), ("isolation", "docker")])
def test_bad_config_names_the_key(key, value):
    with pytest.raises(ConfigError, match=f"sandbox.{key}"):
        SandboxConfig(**{key: value})


def test_missing_isolation_is_an_error_unless_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `unshare` to be found
    with pytest.raises(SandboxUnavailable, match="allow_unisolated"):
        Sandbox(workers=1)
    with pytest.warns(RuntimeWarning, match="NOT ISOLATED"):
        box = Sandbox(workers=1, allow_unisolated=True, cache=False)
    with box:
        assert not box.isolated and box.run(ADD, ADD_TESTS).passed


def test_sandbox_reports_isolation(sb):
    assert sb.isolated and sb.stats()["isolated"]
    if os.geteuid() == 0:
        assert len(set(sb.job_uids)) == sb.n_workers and all(u >= BASE_UID for u in sb.job_uids)


# ---------------------------------------------------------------------------------------------- attacks

def test_infinite_loop_times_out(sb):
    r = sb.run("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS)
    assert r.status == "timeout" and not r.passed
    assert r.feedback == f"Timed out after {sb.config.timeout:g} seconds." and r.duration >= sb.config.timeout
    assert job_user_processes(sb.job_uids) == []  # the loop was killed, not left spinning
    assert_healthy(sb)


def test_tests_before_a_timeout_still_count(sb):
    program = "def add(a, b):\n    while a == 0:\n        pass\n    return a + b\n"
    r = sb.run(program, ADD_TESTS)
    assert r.status == "timeout" and r.n_passed == 2


def test_memory_bomb(sb):
    r = sb.run("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))\n", ADD_TESTS)
    assert r.status == "memory" and not r.passed
    assert_healthy(sb)


def test_fork_bomb(sb):
    program = textwrap.dedent("""
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """)
    r = sb.run(program, ADD_TESTS)
    assert not r.passed
    assert_healthy(sb)


def test_write_outside_the_work_dir(sb, tmp_path):
    target_dir = tmp_path / "open"
    target_dir.mkdir()
    os.chmod(target_dir, 0o777)  # only the sandbox stands between the program and this directory
    before = sorted(os.listdir(tmp_path))
    targets = [str(target_dir / "pwned.txt"), "/tmp/pwned-by-sandbox.txt", os.path.join(os.getcwd(), "pwned.txt"),
               "/dev/shm/pwned.txt", os.path.expanduser("~/pwned.txt")]
    program = textwrap.dedent(f"""
        import os
        written = []
        for path in {targets!r}:
            try:
                with open(path, "w") as f:
                    f.write("x")
                written.append(path)
            except OSError:
                pass
        with open("inside.txt", "w") as f:  # its own directory is writable
            f.write("ok")
        def add(a, b):
            return a + b
        assert not written, written
    """)
    r = sb.run(program, ADD_TESTS)
    assert r.passed, r.feedback  # it could write its own dir, and nothing else
    for path in targets:
        assert not os.path.exists(path), path
    assert sorted(os.listdir(tmp_path)) == before and os.listdir(target_dir) == []


def test_secrets_in_the_environment_are_invisible():
    secrets = {"OPENAI_API_KEY": "sk-test-0123456789", "WANDB_API_KEY": "wandb-secret-42", "HF_TOKEN": "hf_secret"}
    old = {k: os.environ.get(k) for k in secrets}
    os.environ.update(secrets)
    try:
        with Sandbox(workers=1, timeout=2, cache=False) as box:
            program = textwrap.dedent(f"""
                import os, glob
                seen = repr(dict(os.environ))
                for path in glob.glob("/proc/*/environ"):
                    try:
                        seen += open(path, "rb").read().decode("latin-1")
                    except OSError:
                        pass
                try:
                    seen += open("/proc/{os.getpid()}/environ", "rb").read().decode("latin-1")
                except OSError:
                    pass
                print(seen)
                def add(a, b):
                    return a + b
            """)
            tests = TestSuite("assert", asserts=tuple(f"assert '{v}' in seen" for v in secrets.values()))
            r = box.run(program, tests)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert r.n_passed == 0 and not r.passed
    assert not any(v in r.stdout for v in secrets.values())


def test_no_network_to_a_local_listener(sb):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted = []

    def accept_loop():
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                accepted.append(listener.accept()[0])
            except (socket.timeout, OSError):
                pass

    thread = threading.Thread(target=accept_loop)
    thread.start()
    program = textwrap.dedent(f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
        s.sendall(b"hello")
        def add(a, b):
            return a + b
    """)
    r = sb.run(program, ADD_TESTS)
    thread.join()
    listener.close()
    assert not r.passed and r.status == "error"
    assert "OSError" in r.feedback or "unreachable" in r.feedback.lower() or "refused" in r.feedback.lower()
    assert accepted == []


def test_killing_the_parent(sb):
    program = textwrap.dedent(f"""
        import os, signal
        for pid in (os.getppid(), {os.getpid()}, {os.getppid()}, 1, -1):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        def add(a, b):
            return a + b
    """)
    r = sb.run(program, ADD_TESTS)
    assert r.passed  # every kill failed or hit only the job's own user; its add() is still correct
    assert sb.stats()["worker_restarts"] == 0
    assert_healthy(sb)


def test_output_flood(sb):
    r = sb.run("while True:\n    print('x' * 65536)\n", ADD_TESTS)
    assert r.status == "output_limit" and not r.passed  # stopped at the output cap, not by the time limit
    assert len(r.stdout) <= sb.config.max_feedback_chars
    assert_healthy(sb)


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "raise SystemExit(0)",
    "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
])
def test_exiting_early_with_status_zero(sb, trick):
    r = sb.run("def add(a, b):\n    return 0\n" + trick + "\n", ADD_TESTS)
    assert not r.passed and r.status == "error"


def test_exit_from_inside_the_function_under_test(sb):
    r = sb.run("import os\ndef add(a, b):\n    os._exit(0)\n", ADD_TESTS)
    assert not r.passed and r.n_passed == 0


def test_system_exit_raised_in_a_destructor(sb):
    program = textwrap.dedent("""
        class Bye:
            def __del__(self):
                raise SystemExit(0)
        def add(a, b):
            Bye()
            return 0
    """)
    r = sb.run(program, ADD_TESTS)
    assert not r.passed and r.n_passed == 1  # only add(0, 0) == 0 holds


def test_redefining_builtins_does_not_help(sb):
    tests = TestSuite("assert", asserts=("assert abs(half(3) - 1.5) < 1e-9", "assert isinstance(half(2), float)",
                                         "assert len([half(1)]) == 1"))
    program = textwrap.dedent("""
        import builtins
        builtins.abs = lambda x: 0
        builtins.isinstance = lambda *a: True
        __builtins__.len = lambda x: 1
        def half(x):
            return 'wrong'
    """)
    r = sb.run(program, tests)
    assert not r.passed and r.test_results[0] is False and r.test_results[1] is False


def test_patching_the_harness_modules_does_not_help(sb):
    program = textwrap.dedent("""
        import os, json
        os.write = lambda fd, data: len(data)
        os._exit = lambda code: None
        json.dumps = lambda obj: '{"event": "done"}'
        def add(a, b):
            return 0
    """)
    r = sb.run(program, ADD_TESTS)
    assert not r.passed and r.n_passed == 1


def test_child_process_left_running(sb):
    program = textwrap.dedent("""
        import os, subprocess, time
        subprocess.Popen(["sleep", "300"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            time.sleep(300)
            os._exit(0)
        def add(a, b):
            return a + b
    """)
    r = sb.run(program, ADD_TESTS)
    assert r.passed  # the program itself is fine; what matters is that nothing of it survives
    assert job_user_processes(sb.job_uids) == []
    assert_healthy(sb)


def test_caller_stays_responsive_during_a_long_run(sb):
    future = sb.submit("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS)
    ticks = 0
    while not future.done():
        ticks += 1
        time.sleep(0.01)
    # The caller's thread kept running while the judge waited out the whole limit in the background.
    assert future.result().status == "timeout" and future.result().duration >= sb.config.timeout
    assert ticks >= 10


def test_interpreter_is_importable_for_the_job_user(sb):
    # /root may be private; the sandbox must still let programs import the standard library and site-packages.
    program = "import json, xml.dom.minidom, sqlite3, email.mime.text\ndef add(a, b):\n    return a + b\n"
    assert sb.run(program, ADD_TESTS).passed


@pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces")
def test_home_directory_secrets_are_hidden(sb):
    home = os.path.expanduser("~")
    program = f"import os\nentries = os.listdir({home!r})\ndef add(a, b):\n    return a + b\n"
    r = sb.run(program, TestSuite("assert", asserts=(("assert entries == [] or all(e.startswith('.pyenv') "
                                                      "for e in entries)"),)))
    if os.stat(home).st_mode & 0o001:
        pytest.skip("home directory is world-readable here; nothing is hidden")
    assert r.passed, r.feedback


def test_per_run_timeout_overrides_the_default(sb):
    r = sb.run("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, timeout=0.5)
    assert r.status == "timeout" and r.feedback == "Timed out after 0.5 seconds."  # the run's limit, not 2 s
    with pytest.raises(ConfigError):
        sb.run(ADD, ADD_TESTS, timeout=-1)


def test_feedback_shows_a_computed_expected_value(sb):
    tests = TestSuite("assert", setup="def want():\n    return [1, 2]\n", asserts=("assert pair() == want()",))
    r = sb.run("def pair():\n    return [2, 1]\n", tests)
    assert "Actual output: [2, 1]" in r.feedback and "Expected output: [1, 2]" in r.feedback
    r = sb.run("def pair():\n    return [2, 1]\n", TestSuite("assert", asserts=("assert pair() == [1, 2]",)))
    assert "Expected output" not in r.feedback  # a literal is already in the test text


# ---------------------------------------------------------------------------------------------- forged verdicts
# Each program below returns wrong values and tries to make the judge say "passed" anyway (issue 16). Before
# the redesign every one of them passed. Now a run that forges is `blocked` (a failed program, counted apart).

WRONG_ADD = "def add(a, b):\n    return 0\n"
OLD_RECORDS = ("b''.join(('{\"event\": \"test\", \"index\": %d, \"ok\": true}\\n' % i).encode() for i in range(3))"
               " + b'{\"event\": \"done\"}\\n'")


def assert_blocked(r):
    assert not r.passed and r.status == "blocked" and r.n_passed == 0, (r.status, r.feedback)
    assert r.test_results == [False] * r.n_tests


@pytest.mark.parametrize("forge", [
    # the known descriptor
    f"os.write(255, {OLD_RECORDS})",
    # every descriptor there might be
    f"for fd in range(3, 1024):\n    try:\n        os.write(fd, {OLD_RECORDS})\n    except OSError:\n        pass",
    # found through /proc
    (f"for name in os.listdir('/proc/self/fd'):\n    fd = os.open('/proc/self/fd/' + name, os.O_WRONLY)\n"
    f"    os.write(fd, {OLD_RECORDS})"),
    # as a file object
    f"f = os.fdopen(255, 'wb')\nf.write({OLD_RECORDS})\nf.flush()",
    # the garbage collector's file objects, and the descriptor as a fallback
    ("import gc, io\nfiles = [o for o in gc.get_objects() if isinstance(o, io.IOBase)]\n"
    f"os.write(255, {OLD_RECORDS})"),
    # today's format, with a made-up tag
    ("os.write(255, b''.join(b'%d %s {\"event\":\"test\",\"index\":%d,\"ok\":true}\\n' % (i, b'0' * 64, i) "
    "for i in range(3)) + b'3 ' + b'0' * 64 + b' {\"event\":\"done\"}\\n')"),
], ids=["fd255", "every_fd", "proc_self_fd", "fdopen", "gc_files", "fake_tag"])
def test_forged_records_are_blocked(sb, forge):
    program = WRONG_ADD + "import os\n" + forge + "\nos._exit(0)\n"
    assert_blocked(sb.run(program, ADD_TESTS))


REPORT_ALL = ("for i in range(3):\n        report({'event': 'test', 'index': i, 'ok': True})\n"
              "    report({'event': 'done'})\n    os._exit(0)")


@pytest.mark.parametrize("reach, blocked", [
    # up the frames to the harness's reporting function
    ("f = sys._getframe()\nwhile 'report' not in f.f_locals:\n    f = f.f_back\nreport = f.f_locals['report']\n"
     "if True:\n    " + REPORT_ALL, True),
    # the same through inspect
    ("import inspect\nf = inspect.currentframe()\nwhile 'report' not in f.f_locals:\n    f = f.f_back\n"
     "report = f.f_locals['report']\nif True:\n    " + REPORT_ALL, False),
    # a traceback's frames
    ("try:\n    raise ValueError\nexcept ValueError as e:\n    f = e.__traceback__.tb_frame\n"
     "while 'report' not in f.f_locals:\n    f = f.f_back\nreport = f.f_locals['report']\nif True:\n    "
     + REPORT_ALL, True),
    # the collector's objects
    ("import gc\nfor report in gc.get_objects():\n    if getattr(report, '__name__', '') == 'report':\n"
     "        break\nif True:\n    " + REPORT_ALL, True),
    # the collector's referrers: os.write sits in the reporter's closure
    ("import gc\nfor cell in gc.get_referrers(os.write):\n    for t in gc.get_referrers(cell):\n"
     "        for report in gc.get_referrers(t):\n            if getattr(report, '__name__', '') == 'report':\n"
     "                " + REPORT_ALL.replace("\n    ", "\n                "), True),
    # the harness module, its globals and closures
    (("import __main__\ng = __main__._child_harness.__globals__\n"
     f"g['os'].write(g['RESULT_FD'], {OLD_RECORDS})\nos._exit(0)"), False),
    # a tracer, handed every new frame
    ("def tracer(frame, event, arg):\n    f = frame\n    while f is not None and 'report' not in f.f_locals:\n"
     "        f = f.f_back\n    if f is not None:\n        report = f.f_locals['report']\n        "
     + REPORT_ALL.replace("\n    ", "\n        ") + "\nsys.settrace(tracer)", True),
    # a signal handler, handed the running frame
    ("import signal\ndef handler(signum, frame):\n    f = frame\n    while 'report' not in f.f_locals:\n"
     "        f = f.f_back\n    report = f.f_locals['report']\n    " + REPORT_ALL
     + "\nsignal.signal(signal.SIGUSR1, handler)\nos.kill(os.getpid(), signal.SIGUSR1)", False),
    # the same with a fresh _signal module, whose signal() would hand the frame over again
    ("import _imp, importlib.machinery\n"
     "fresh = _imp.create_builtin(importlib.machinery.ModuleSpec('_signal', None, origin='built-in'))\n"
     "def handler(signum, frame):\n    f = frame\n    while 'report' not in f.f_locals:\n"
     "        f = f.f_back\n    report = f.f_locals['report']\n    " + REPORT_ALL
     + "\nfresh.signal(10, handler)\nos.kill(os.getpid(), 10)", True),
], ids=["getframe", "inspect", "traceback", "gc_objects", "gc_referrers", "main_globals", "settrace", "signal",
        "fresh_signal_module"])
def test_reaching_the_harness_does_not_pass(sb, reach, blocked):
    program = WRONG_ADD + "import os, sys\n" + reach + "\n"
    r = sb.run(program, ADD_TESTS)
    if blocked:
        assert_blocked(r)
    assert not r.passed and r.n_passed == 0, (r.status, r.feedback)


@pytest.mark.parametrize("program, tests, blocked", [
    ("class Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes()\n",
     ADD_TESTS, True),
    (("class I(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
     "def add(a, b):\n    return I(7)\n"), ADD_TESTS, True),
    (("class S(str):\n    def __eq__(self, other):\n        return True\n    __hash__ = str.__hash__\n"
     "def greet(name):\n    return S('nope')\n"),
     TestSuite("assert", asserts=("assert greet('x') == 'hi x'", "assert 'hi y' == greet('y')")), True),
    (("class L(list):\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n"
     "        return False\ndef pair(a):\n    return L([0])\n"),
     TestSuite("assert", asserts=("assert pair(1) == [1, 1]", "assert not pair(2) != [2, 2]")), True),
    # __eq__ answers with an object that is always true
    (("class T:\n    def __bool__(self):\n        return True\nclass E:\n    def __eq__(self, other):\n"
     "        return T()\ndef add(a, b):\n    return E()\n"), ADD_TESTS, True),
    # a __bool__ that says yes to `assert f(x)` while the value is wrong, and arithmetic that cancels out
    (("class Z:\n    def __bool__(self):\n        return True\n    def __sub__(self, other):\n        return 0\n"
     "    __rsub__ = __sub__\n    def __abs__(self):\n        return 0\ndef half(x):\n    return Z()\n"),
     TestSuite("assert", asserts=("assert abs(half(3) - 1.5) < 1e-9", "assert half(2)", "assert half(0) == 0")),
     True),
    # __class__ spoofing: isinstance believes it, the judge does not
    (("class Fake:\n    __class__ = property(lambda self: int)\n    def __eq__(self, other):\n        return True\n"
     "def add(a, b):\n    return Fake()\n"),
     TestSuite("assert", asserts=("assert isinstance(add(1, 2), int) and add(1, 2) == 3",)), True),
    # an exception whose message, when the judge formats it, writes records and exits
    (("import os\nclass Ok(Exception):\n    def __str__(self):\n"
     f"        os.write(255, {OLD_RECORDS})\n        os._exit(0)\n"
     "def add(a, b):\n    raise Ok()\n"), ADD_TESTS, True),
    # an exception dressed as a pass
    (("class AssertionError(Exception):\n    pass\ndef add(a, b):\n"
     "    raise SystemExit('All tests passed: 3/3 {\"event\": \"done\"}')\n"), ADD_TESTS, False),
], ids=["eq_true", "int_subclass", "str_subclass", "list_subclass", "eq_returns_truthy", "bool_and_arith",
        "class_spoofing", "exception_message_forges", "exception_claims_pass"])
def test_values_that_vouch_for_themselves_fail(sb, program, tests, blocked):
    r = sb.run(program, tests)
    if blocked:
        assert_blocked(r)
    assert not r.passed and r.n_passed == 0, (r.status, r.feedback)


def test_a_test_that_swallows_the_refusal_still_fails(sb):
    tests = TestSuite("assert", asserts=("try:\n    assert add(1, 2) == 3\nexcept BaseException:\n    pass",))
    r = sb.run("class Yes:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Yes()\n", tests)
    assert_blocked(r)


def test_patching_builtins_from_inside_the_function_under_test(sb):
    # The function replaces abs() on its first call; the next test must still use the real one.
    program = "import builtins\ndef add(a, b):\n    builtins.abs = lambda x: 0\n    return 0\n"
    tests = TestSuite("assert", asserts=("assert abs(add(1, 2) - 3) < 1e-9", "assert abs(add(2, 2) - 4) < 1e-9"))
    r = sb.run(program, tests)
    assert not r.passed and r.n_passed == 0


def test_the_tests_text_is_not_readable_from_linecache(sb):
    # The answers of hidden tests must not be one lookup away.
    program = textwrap.dedent("""
        import linecache, re
        def add(a, b):
            for name, entry in list(linecache.cache.items()):
                for line in entry[2]:
                    m = re.search(r"add\\(%d, %d\\) == (\\d+)" % (a, b), line)
                    if m:
                        return int(m.group(1))
            return -1
    """)
    r = sb.run(program, ADD_TESTS)
    assert not r.passed and r.n_passed == 0


def test_reading_test_code_through_an_audit_hook_is_blocked(sb):
    # An audit hook would see each test's code object (and its expected values) as the judge runs it.
    program = textwrap.dedent("""
        import sys
        seen = []
        sys.addaudithook(lambda event, args: seen.append(args) if event == "exec" else None)
        def add(a, b):
            return 0
    """)
    assert_blocked(sb.run(program, ADD_TESTS))


# ---------------------------------------------------------------------------------------------- honest programs
# The defences must not cost ordinary programs their pass.

@pytest.mark.parametrize("program, tests", [
    ("import numpy as np\ndef add(a, b):\n    return np.int64(a) + np.int64(b)\n", ADD_TESTS),
    (("import enum\nclass N(enum.IntEnum):\n    THREE = 3\n    FOUR = 4\n    ZERO = 0\n"
     "def add(a, b):\n    return N(a + b)\n"), ADD_TESTS),
    (("from collections import Counter, OrderedDict, namedtuple\nP = namedtuple('P', 'x y')\n"
     "def f(s):\n    return Counter(s), OrderedDict(a=1), P(1, 2)\n"),
     TestSuite("assert", asserts=("assert f('aab') == ({'a': 2, 'b': 1}, {'a': 1}, (1, 2))",))),
    (("import logging, re\nlogging.basicConfig()\ndef f(s):\n    logging.getLogger('x').debug('called')\n"
     "    return re.match('a+', s)\n"), TestSuite("assert", asserts=("assert f('aa')", "assert f('b') is None"))),
    # the tests' own classes may define __eq__ (MBPP+ compares with a tolerance this way)
    ("def third(x):\n    return x / 3\n",
     TestSuite("assert", setup="class Near:\n    def __init__(self, v):\n        self.v = v\n"
               "    def __eq__(self, other):\n        return abs(other - self.v) < 1e-6\n",
               asserts=("assert third(1) == Near(0.333333)", "assert not third(1) == Near(0.5)"))),
    # a signal handler still runs; it is just not handed a frame
    (("import os, signal\ngot = []\nsignal.signal(signal.SIGUSR1, lambda s, frame: got.append((s, frame)))\n"
     "os.kill(os.getpid(), signal.SIGUSR1)\ndef add(a, b):\n    return a + b\n"),
     TestSuite("assert", asserts=("assert got == [(signal.SIGUSR1, None)]", "assert add(1, 2) == 3"),
               setup="import signal")),
], ids=["numpy_scalar", "int_enum", "stdlib_containers", "logging_and_match", "test_class_eq", "signal_handler"])
def test_honest_programs_still_pass(sb, program, tests):
    r = sb.run(program, tests)
    assert r.passed, (r.status, r.feedback)


def test_comparisons_keep_python_semantics_on_plain_data(sb):
    # A list is not a tuple, 1 == 1.0, a chained comparison still chains.
    tests = TestSuite("assert", asserts=("assert f() == (1, 2)", "assert f() == [1.0, 2]", "assert 0 < f()[0] < 2",
                                         "assert f() != [2, 1]", "assert 2 in f()"))
    r = sb.run("def f():\n    return [1, 2]\n", tests)
    assert r.test_results == [False, True, True, True, True]
    assert r.status == "failed"


def test_an_object_that_is_not_plain_data_fails_without_being_a_hack(sb):
    r = sb.run("def f():\n    return (x for x in [1, 2])\n", TestSuite("assert", asserts=("assert f() == [1, 2]",)))
    assert r.status == "failed" and "plain data" in r.feedback


def test_blocked_runs_are_counted_by_status():
    with Sandbox(workers=1, timeout=2, cache=False) as box:
        box.run(ADD, ADD_TESTS)
        box.run(WRONG_ADD + f"import os\nos.write(255, {OLD_RECORDS})\nos._exit(0)\n", ADD_TESTS)
        stats = box.stats()
    assert stats["status/passed"] == 1 and stats["status/blocked"] == 1 and stats["status/failed"] == 0


# ---------------------------------------------------------------------------------------------- real benchmarks

@pytest.mark.slow
def test_humanevalpack_canonical_solutions_pass_and_buggy_ones_fail():
    from selfdebug.problems import load_humanevalpack

    pack = load_humanevalpack()
    items = []
    for p in pack:
        items += [(p.reference, p.tests), (p.metadata["buggy_program"], p.tests)]
    with Sandbox(timeout=10, cache=False) as box:
        results = box.run_batch(items)
    good, bad = results[0::2], results[1::2]
    assert len(good) == 164
    assert [(p.task_id, g.status) for p, g in zip(pack, good) if not g.passed] == []
    assert [p.task_id for p, b in zip(pack, bad) if b.passed] == []  # 3 loop forever: timeouts
    assert not any(r.status == "blocked" for r in results)


@pytest.mark.skipif(os.geteuid() != 0, reason="job users (and so non-dumpable children) need root")
def test_the_kernel_backs_the_hook_on_process_memory(sb):
    # Routes the audit hook does not see: a symlink to /proc/self/mem, and a fresh interpreter (no hook)
    # reading the child's memory. Neither may open it.
    program = textwrap.dedent("""
        import os, subprocess, sys
        os.symlink("/proc/self/mem", "m")
        try:
            open("m", "rb")
            via_link = "opened"
        except OSError as exc:
            via_link = type(exc).__name__
        helper = subprocess.run([sys.executable, "-c", f"open('/proc/{os.getpid()}/mem', 'rb')"],
                                capture_output=True, text=True)
        via_helper = helper.stderr.strip().splitlines()[-1] if helper.returncode else "opened"
        def add(a, b):
            return a + b
    """)
    tests = TestSuite("assert", asserts=("assert via_link == 'PermissionError'",
                                         "assert via_helper.startswith('PermissionError')"))
    r = sb.run(program, tests)
    assert r.passed, r.feedback
