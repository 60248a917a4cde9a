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
    """After an attack: the caller runs, the pool still judges correctly and quickly, nothing is left."""
    start = time.monotonic()
    for _ in range(sb.n_workers * 2):  # reach every worker
        assert sb.run(ADD, ADD_TESTS).passed
    assert time.monotonic() - start < 5
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
    start = time.monotonic()
    r = sb.run("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - start < 6
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
    start = time.monotonic()
    r = sb.run("while True:\n    print('x' * 65536)\n", ADD_TESTS)
    assert r.status == "output_limit" and not r.passed
    assert len(r.stdout) <= sb.config.max_feedback_chars
    assert time.monotonic() - start < 6
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
    start = time.monotonic()
    while not future.done():
        ticks += 1
        time.sleep(0.01)
    assert time.monotonic() - start > 1 and ticks > 50
    assert future.result().status == "timeout"


def test_interpreter_is_importable_for_the_job_user(sb):
    # /root may be private; the sandbox must still let programs import the standard library and site-packages.
    program = "import json, xml.dom.minidom, sqlite3, email.mime.text\ndef add(a, b):\n    return a + b\n"
    assert sb.run(program, ADD_TESTS).passed


@pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces")
def test_home_directory_secrets_are_hidden(sb):
    home = os.path.expanduser("~")
    program = f"import os\nentries = os.listdir({home!r})\ndef add(a, b):\n    return a + b\n"
    r = sb.run(program, TestSuite("assert", asserts=("assert entries == [] or all(e.startswith('.pyenv') "
                                                      "for e in entries)",)))
    if os.stat(home).st_mode & 0o001:
        pytest.skip("home directory is world-readable here; nothing is hidden")
    assert r.passed, r.feedback


def test_per_run_timeout_overrides_the_default(sb):
    start = time.monotonic()
    r = sb.run("def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, timeout=0.5)
    assert r.status == "timeout" and time.monotonic() - start < 1.5
    with pytest.raises(ConfigError):
        sb.run(ADD, ADD_TESTS, timeout=-1)


def test_feedback_shows_a_computed_expected_value(sb):
    tests = TestSuite("assert", setup="def want():\n    return [1, 2]\n", asserts=("assert pair() == want()",))
    r = sb.run("def pair():\n    return [2, 1]\n", tests)
    assert "Actual output: [2, 1]" in r.feedback and "Expected output: [1, 2]" in r.feedback
    r = sb.run("def pair():\n    return [2, 1]\n", TestSuite("assert", asserts=("assert pair() == [1, 2]",)))
    assert "Expected output" not in r.feedback  # a literal is already in the test text
