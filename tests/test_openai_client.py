"""OpenAIGenerator against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import json
import pickle
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from selfdebug.core.errors import ConfigError, SelfDebugError
from selfdebug.generation import GenerationRequest, SamplingParams
from selfdebug.generation.openai import OpenAIGenerator, parse_retry_after

try:
    from tests.openai_server import (
        FakeOpenAIServer,
        Fault,
        completion_response,
        fake_openai_server,
        rate_limited,
    )
except ImportError:  # pytest run without the repository root on sys.path
    from openai_server import (  # type: ignore[no-redef]
        FakeOpenAIServer,
        Fault,
        completion_response,
        fake_openai_server,  # noqa: F401
        rate_limited,
    )

KEY_ENV = "SELFDEBUG_TEST_OPENAI_KEY"
SECRET = "sk-test-0123456789abcdefSECRET"
FAST = {"backoff_base": 0.001, "backoff_max": 0.01, "timeout": 5.0}


def ask(text: str) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}])


def numbered(request: dict) -> list[str]:
    prompt = request["messages"][-1]["content"]
    return [f"{prompt}#{i}" for i in range(request.get("n", 1))]


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    return KEY_ENV


@pytest.fixture
def with_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return KEY_ENV


def make(server: FakeOpenAIServer, key_env: str, **kwargs) -> OpenAIGenerator:
    options = {**FAST, **kwargs}
    return OpenAIGenerator(server.base_url, "fake-model", api_key_env=key_env, **options)


# ---------------------------------------------------------------------------- results and request body


def test_n_completions_per_request_in_order(fake_openai_server, no_key):
    server = fake_openai_server
    server.responder = numbered
    params = SamplingParams(n=3, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=11)
    with make(server, no_key, extra_body={"stop": ["```"]}) as gen:
        out = gen.generate([ask("a"), ask("b"), ask("c")], params)
        assert out == [[f"{p}#{i}" for i in range(3)] for p in "abc"]
        assert gen.last_finish_reasons == [["stop"] * 3] * 3
        assert gen.name == "openai:fake-model"
    bodies = sorted((r.json for r in server.chat_requests), key=lambda b: b["messages"][-1]["content"])
    assert len(bodies) == 3
    assert bodies[0] == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "a"}],
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 64,
        "n": 3,
        "seed": 11,
        "stop": ["```"],
    }
    assert all(r.path == "/v1/chat/completions" for r in server.chat_requests)


def test_use_n_false_sends_one_request_per_sample_with_distinct_seeds(fake_openai_server, no_key):
    server = fake_openai_server
    server.responder = lambda req: [f"{req['messages'][-1]['content']}@seed{req['seed']}"]
    with make(server, no_key, use_n=False) as gen:
        out = gen.generate([ask("x"), ask("y")], SamplingParams(n=3, seed=5))
    assert out == [["x@seed5", "x@seed6", "x@seed7"], ["y@seed5", "y@seed6", "y@seed7"]]
    assert len(server.chat_requests) == 6
    assert all("n" not in r.json for r in server.chat_requests)


def test_empty_batch_sends_nothing(fake_openai_server, no_key):
    with make(fake_openai_server, no_key) as gen:
        assert gen.generate([], SamplingParams(n=2)) == []
    assert fake_openai_server.requests == []


def test_usage_and_finish_reasons_are_recorded(fake_openai_server, no_key):
    server = fake_openai_server
    server.responder = lambda req: completion_response(
        req["model"], ["one two", "three"], prompt_tokens=7, finish_reasons=["length", "stop"]
    )
    with make(server, no_key) as gen:
        out = gen.generate([ask("p"), ask("q")], SamplingParams(n=2))
        assert out == [["one two", "three"], ["one two", "three"]]
        assert gen.last_finish_reasons == [["length", "stop"], ["length", "stop"]]
        assert (gen.last_usage.prompt_tokens, gen.last_usage.completion_tokens) == (14, 6)
        assert (gen.last_usage.requests, gen.last_usage.completions, gen.last_usage.retries) == (2, 4, 0)
        gen.generate([ask("r")], SamplingParams(n=2))
        assert gen.last_usage.requests == 1
        assert (gen.usage.requests, gen.usage.prompt_tokens, gen.usage.completion_tokens) == (3, 21, 9)


def test_fewer_choices_than_requested_is_an_error_naming_use_n(fake_openai_server, no_key):
    server = fake_openai_server
    server.responder = lambda req: ["only one"]  # a server that ignores n
    pattern = r"returned 1 choice\(s\) for a request of n=4.*use_n=False"
    with make(server, no_key) as gen, pytest.raises(SelfDebugError, match=pattern):
        gen.generate([ask("a")], SamplingParams(n=4))
    assert len(server.chat_requests) == 1  # not retried: the server will answer the same again


# ---------------------------------------------------------------------------- concurrency


def test_concurrency_is_bounded(no_key):
    with FakeOpenAIServer(numbered, latency=0.05) as server:
        with make(server, no_key, max_concurrency=2) as gen:
            out = gen.generate([ask(str(i)) for i in range(10)], SamplingParams(n=2))
        assert out == [[f"{i}#0", f"{i}#1"] for i in range(10)]
        assert len(server.chat_requests) == 10
        assert server.max_in_flight == 2  # bounded, and requests do overlap


def test_concurrency_bound_is_shared_by_concurrent_generate_calls(no_key):
    with FakeOpenAIServer(numbered, latency=0.05) as server:
        gen = make(server, no_key, max_concurrency=2)
        results: dict[int, list] = {}
        threads = [
            threading.Thread(target=lambda k=k: results.update({k: gen.generate([ask(f"{k}-{i}") for i in range(3)],
                                                                                SamplingParams())}))
            for k in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        gen.close()
        assert results == {k: [[f"{k}-{i}#0"] for i in range(3)] for k in range(3)}
        assert server.max_in_flight <= 2


# ---------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(rate_limited(2), id="429-retry-after-0"),
        pytest.param([Fault.http(500), Fault.http(503)], id="5xx"),
        pytest.param([Fault.delay(2.0)], id="timeout"),
        pytest.param([Fault.malformed(), Fault.malformed(b'{"choices": "nope"}')], id="malformed"),
        pytest.param([Fault.disconnect()], id="disconnect"),
    ],
)
def test_transient_failures_are_retried_then_succeed(fake_openai_server, no_key, faults):
    server = fake_openai_server
    server.responder = numbered
    server.set_faults(faults)
    with make(server, no_key, timeout=0.3, max_retries=3) as gen:
        assert gen.generate([ask("a")], SamplingParams(n=2)) == [["a#0", "a#1"]]
        assert gen.last_usage.retries == len(faults)
        assert gen.last_usage.attempts == len(faults) + 1
    assert len(server.chat_requests) == len(faults) + 1


def test_retry_after_header_is_honoured(fake_openai_server, no_key):
    server = fake_openai_server
    server.set_faults([Fault.http(429, retry_after="0.4")])
    with make(server, no_key) as gen:  # backoff alone would wait ~1 ms
        started = time.monotonic()
        gen.generate([ask("a")], SamplingParams())
        assert time.monotonic() - started >= 0.38
    assert len(server.chat_requests) == 2


def test_gives_up_after_max_retries_with_clear_error(fake_openai_server, no_key):
    server = fake_openai_server
    server.set_faults(lambda index, request: Fault.http(500, "the GPU caught fire"))
    with make(server, no_key, max_retries=2) as gen, pytest.raises(SelfDebugError) as info:
        gen.generate([ask("a")], SamplingParams())
    message = str(info.value)
    assert "after 3 tries" in message and "max_retries=2" in message
    assert "HTTP 500" in message and "the GPU caught fire" in message
    assert len(server.chat_requests) == 3


def test_connection_refused_gives_up_with_clear_error(no_key):
    with FakeOpenAIServer() as server:
        url = server.base_url
    gen = OpenAIGenerator(url, "m", api_key_env=no_key, max_retries=1, **FAST)
    with pytest.raises(SelfDebugError, match=r"after 2 tries.*connection"):
        gen.generate([ask("a")], SamplingParams())
    gen.close()


@pytest.mark.parametrize(
    "status, server_message, hint",
    [
        (400, "max_tokens is too large", None),
        (401, "Incorrect API key provided", "check the API key"),
        (404, "The model `fake-model` does not exist", "ending in /v1"),
    ],
)
def test_client_errors_are_not_retried(fake_openai_server, with_key, status, server_message, hint):
    server = fake_openai_server
    server.set_faults(lambda index, request: Fault.http(status, server_message))
    with make(server, with_key, max_retries=5) as gen, pytest.raises(SelfDebugError) as info:
        gen.generate([ask("a")], SamplingParams())
    message = str(info.value)
    assert f"HTTP {status}" in message and server_message in message
    if hint:
        assert hint in message
    assert len(server.chat_requests) == 1


def test_one_failing_request_fails_the_batch(fake_openai_server, no_key):
    server = fake_openai_server
    server.responder = numbered
    server.set_faults(lambda index, req: Fault.http(400, "bad one") if req["messages"][-1]["content"] == "bad"
                      else None)
    with make(server, no_key, max_concurrency=1) as gen:
        with pytest.raises(SelfDebugError, match="bad one"):
            gen.generate([ask("ok"), ask("bad"), ask("ok2"), ask("ok3")], SamplingParams())
        assert gen.generate([ask("z")], SamplingParams()) == [["z#0"]]  # usable afterwards


# ---------------------------------------------------------------------------- API key


def test_key_is_sent_as_bearer_and_never_leaks(fake_openai_server, with_key, tmp_path):
    server = fake_openai_server
    log = tmp_path / "requests.jsonl"
    with make(server, with_key, request_log=log, max_retries=0) as gen:
        gen.generate([ask("a")], SamplingParams())
        assert server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"
        assert gen.has_api_key
        # A server error that echoes the key back must not carry it into our exception or log.
        server.set_faults(lambda index, request: Fault.http(401, f"Incorrect API key provided: {SECRET}"))
        with pytest.raises(SelfDebugError) as info:
            gen.generate([ask("b")], SamplingParams())
        server.set_faults(lambda index, request: Fault.http(500, f"oops {SECRET}"))
        with pytest.raises(SelfDebugError) as info2:
            gen.generate([ask("c")], SamplingParams())
        for text in (str(info.value), repr(info.value), str(info2.value), repr(gen), str(gen), repr(vars(gen))):
            assert SECRET not in text
        assert KEY_ENV in str(info.value)  # names where the key comes from, not the key
        with pytest.raises(TypeError):
            pickle.dumps(gen)
    content = log.read_text()
    assert SECRET not in content and "authorization" not in content.lower()
    assert len(content.splitlines()) == 3


def test_no_key_sends_no_authorization_header(fake_openai_server, no_key):
    server = fake_openai_server
    with make(server, no_key) as gen:
        assert not gen.has_api_key
        gen.generate([ask("a")], SamplingParams())
    assert "authorization" not in server.chat_requests[0].headers


def test_key_is_read_at_construction(fake_openai_server, monkeypatch):
    server = fake_openai_server
    monkeypatch.setenv(KEY_ENV, "sk-first")
    gen = make(server, KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "sk-second")
    gen.generate([ask("a")], SamplingParams())
    gen.close()
    assert server.chat_requests[0].headers["authorization"] == "Bearer sk-first"


def test_key_with_a_newline_is_a_config_error_without_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-abc\ndef")
    with pytest.raises(ConfigError) as info:
        OpenAIGenerator("http://127.0.0.1:1/v1", "m", api_key_env=KEY_ENV)
    assert "sk-abc" not in str(info.value) and KEY_ENV in str(info.value)


# ---------------------------------------------------------------------------- request log


def test_request_log_has_one_line_per_attempt(fake_openai_server, no_key, tmp_path):
    server = fake_openai_server
    server.responder = numbered
    server.set_faults([Fault.http(429, retry_after=0), Fault.http(500, "boom")])
    log = tmp_path / "logs" / "openai.jsonl"
    with make(server, no_key, request_log=log) as gen:
        gen.generate([ask("hello world")], SamplingParams(n=2))
        gen.generate([ask("again")], SamplingParams(n=1))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["status"] for line in lines] == [429, 500, 200, 200]
    assert [line["attempt"] for line in lines] == [1, 2, 3, 1]
    assert [line["request"] for line in lines] == [1, 1, 1, 2]
    assert [line["n"] for line in lines] == [2, 2, 2, 1]
    assert "HTTP 429" in lines[0]["error"] and "boom" in lines[1]["error"]
    assert lines[0]["retry_in_s"] == 0 and lines[2]["error"] is None
    assert lines[2]["prompt_tokens"] == 2 and lines[2]["completion_tokens"] == 4  # "hello world#i" x2
    assert lines[0]["prompt_tokens"] is None
    for line in lines:
        assert set(line) >= {"time", "status", "latency_s", "attempt", "n", "error"}
        assert line["latency_s"] >= 0


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "base_url",
    ["", "ftp://host/v1", "127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1/chat/completions",
     "http://user:pw@host/v1"],
)
def test_bad_base_url_is_a_config_error(base_url, no_key):
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIGenerator(base_url, "m", api_key_env=no_key)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_concurrency": 0}, {"max_retries": -1}, {"timeout": 0}, {"backoff_base": -1}, {"extra_body": [1]}],
)
def test_bad_options_are_config_errors(kwargs, no_key):
    with pytest.raises(ConfigError):
        OpenAIGenerator("http://127.0.0.1:8000/v1", "m", api_key_env=no_key, **kwargs)


def test_trailing_slash_in_base_url_is_accepted(fake_openai_server, no_key):
    gen = OpenAIGenerator(fake_openai_server.base_url + "/", "m", api_key_env=no_key, **FAST)
    assert gen.endpoint == fake_openai_server.base_url + "/chat/completions"
    assert gen.generate([ask("a")], SamplingParams()) == [["0: a"]]
    gen.close()


def test_parse_retry_after():
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 <= parse_retry_after({"Retry-After": later}) <= 31
    earlier = format_datetime(datetime.now(timezone.utc) - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": earlier}) == 0.0
