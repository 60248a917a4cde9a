"""A scriptable OpenAI-compatible chat-completions server for tests (standard library only).

It listens on 127.0.0.1 on an ephemeral port, in a background thread, and answers
``POST .../chat/completions`` (and ``GET .../models``) the way an OpenAI-compatible server does.
Tests of anything that talks to such a server (the OpenAI generator, a teacher model, an LLM judge)
can use it over a real socket.

Typical use::

    from tests.openai_server import FakeOpenAIServer, Fault

    def responder(request: dict) -> list[str]:          # request: the parsed JSON body
        prompt = request["messages"][-1]["content"]
        return [f"answer {i} to {prompt}" for i in range(request.get("n", 1))]

    with FakeOpenAIServer(responder, faults=[Fault.http(429, retry_after=0), Fault.http(500)]) as server:
        client = OpenAIGenerator(server.base_url, "fake-model", ...)   # base_url ends in /v1
        ...
        assert len(server.chat_requests) == 3
        assert server.chat_requests[0].headers.get("authorization") is None

or, as a pytest fixture, ``from tests.openai_server import fake_openai_server`` in a test module
(or a conftest) and take ``fake_openai_server`` as an argument; set ``server.responder``,
``server.set_faults(...)``, ``server.latency`` in the test.

Responder: ``responder(request_json) -> list[str] | str | dict``. A list gives one choice per text
(``finish_reason`` "stop"); a str is one choice; a dict is sent verbatim as the whole JSON response
(for odd shapes: fewer choices, other finish reasons, no usage). Without a responder,
`echo_responder` answers ``n`` texts ``"<i>: <last message content>"``. If the responder raises, the
server answers 500 with the exception text.

Faults: ``faults`` is either a list, consumed one item per chat request in arrival order (``None``
for "answer normally"; requests after the list is used up are answered normally), or a callable
``(index, request_json) -> Fault | None`` (index counts chat requests from 0). See `Fault` for the
kinds: an HTTP error status (with ``Retry-After`` or other headers), a delay before answering (to go
beyond a client's timeout), a malformed body, or a dropped connection.

Recorded: every request received, as a `RecordedRequest` (method, path, lower-cased headers, parsed
JSON body), in ``server.requests`` (``server.chat_requests`` for chat completions only), and the most
requests ever handled at once in ``server.max_in_flight``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "FakeOpenAIServer",
    "Fault",
    "RecordedRequest",
    "completion_response",
    "echo_responder",
    "fake_openai_server",
    "rate_limited",
    "word_count",
]

#: request JSON -> completion texts (list or str) or a whole response body (dict).
Responder = Callable[[dict], Any]


@dataclass(frozen=True)
class Fault:
    """What to do to one chat request instead of (or before) answering it normally.

    Build one with the class methods:

    * ``Fault.http(status, message=..., retry_after=None, headers=None)``: answer ``status`` with an
      OpenAI-shaped error body ``{"error": {"message": ..., "code": status}}``; ``retry_after``
      becomes a ``Retry-After`` header (seconds, sent as given: ``0``, ``1``, ``"0.2"``).
    * ``Fault.delay(seconds)``: wait, then answer normally (beyond the client's timeout, the client
      sees a timeout; the late answer goes nowhere).
    * ``Fault.malformed(body=b"...", status=200)``: answer ``status`` with a body that is not a valid
      chat-completion response.
    * ``Fault.disconnect()``: close the connection without answering.
    """

    kind: str
    status: int = 200
    message: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    body: bytes = b""

    @classmethod
    def http(
        cls,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fault:
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = str(retry_after)
        return cls(
            kind="http",
            status=status,
            message=message if message is not None else f"injected HTTP {status}",
            headers=tuple(extra.items()),
        )

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls(kind="delay", seconds=float(seconds))

    @classmethod
    def malformed(cls, body: bytes | str = b"{not json", status: int = 200) -> Fault:
        return cls(kind="malformed", status=status, body=body.encode() if isinstance(body, str) else body)

    @classmethod
    def disconnect(cls) -> Fault:
        return cls(kind="disconnect")


def rate_limited(k: int, retry_after: float | str = 0) -> list[Fault]:
    """A fault list: the first ``k`` chat requests get HTTP 429 with ``Retry-After: retry_after``."""
    return [Fault.http(429, "rate limited (injected)", retry_after=retry_after) for _ in range(k)]


@dataclass
class RecordedRequest:
    """One request the server received. ``headers`` keys are lower-case; ``json`` is None if unparsable."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    time: float = field(default_factory=time.time)


def word_count(text: str) -> int:
    """The fake server's "token" count: whitespace-separated words."""
    return len(text.split())


def echo_responder(request: dict) -> list[str]:
    """The default responder: ``n`` texts ``"<i>: <content of the last message>"``."""
    messages = request.get("messages") or [{}]
    last = messages[-1].get("content", "") if isinstance(messages[-1], dict) else ""
    return [f"{i}: {last}" for i in range(int(request.get("n", 1) or 1))]


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 in a background thread; use it as a context manager.

    Args:
        responder: request JSON -> completion texts (see the module docstring); default `echo_responder`.
        faults: a list or callable fault schedule (see the module docstring).
        latency: seconds every chat request waits before it is answered (to make requests overlap
            when a test checks concurrency).
        require_key: if set, chat requests without ``Authorization: Bearer <require_key>`` get 401.
        models: if set, chat requests for another model get 404 (like vLLM); also what ``GET
            /v1/models`` lists.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        faults: Any = None,
        latency: float = 0.0,
        require_key: str | None = None,
        models: Sequence[str] | None = None,
    ) -> None:
        self.responder: Responder = responder or echo_responder
        self.latency = latency
        self.require_key = require_key
        self.models = list(models) if models is not None else None
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._chat_count = 0
        self._faults: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.set_faults(faults)

    # ---------------------------------------------------------------- control

    def set_faults(self, faults: Any) -> None:
        """Replace the fault schedule; a list starts with the next chat request."""
        with self._lock:
            if faults is None or callable(faults):
                self._faults = faults
            else:
                self._faults = list(faults)

    def reset(self) -> None:
        """Forget recorded requests, the in-flight maximum and the fault schedule."""
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0
            self._chat_count = 0
            self._faults = None

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.rstrip("/").endswith("/chat/completions")]

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it as a context manager or call start()")
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no API version)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root an OpenAI client takes: ``http://127.0.0.1:<port>/v1``."""
        return self.root_url + "/v1"

    def start(self) -> FakeOpenAIServer:
        if self._httpd is not None:
            return self
        self._stop.clear()
        handler = type("_BoundHandler", (_Handler,), {"fake": self})
        httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping in a delay fault
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- used by the handler

    def _next_fault(self, request_json: Any) -> Fault | None:
        with self._lock:
            index = self._chat_count
            self._chat_count += 1
            faults = self._faults
        if faults is None:
            return None
        if callable(faults):
            return faults(index, request_json if isinstance(request_json, dict) else {})
        return faults[index] if index < len(faults) else None

    def _enter(self, record: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(record)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here, not a test failure


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        record = RecordedRequest("GET", self.path, _lower(self.headers), b"", None)
        self._enter(record)
        try:
            if self.path.rstrip("/").endswith("/models"):
                names = self.fake.models or ["fake-model"]
                data = [{"id": m, "object": "model", "owned_by": "fake"} for m in names]
                self._send_json(200, {"object": "list", "data": data})
            else:
                self._send_error(404, f"no route for GET {self.path}")
        finally:
            self._leave()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            parsed = None
        record = RecordedRequest("POST", self.path, _lower(self.headers), raw, parsed)
        self._enter(record)
        try:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_error(404, f"no route for POST {self.path}")
                return
            self._chat(parsed)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._leave()

    def _chat(self, request: Any) -> None:
        fake = self.fake
        fault = fake._next_fault(request)
        fake._sleep(fake.latency)
        if fault is not None:
            if fault.kind == "http":
                self._send_error(fault.status, fault.message, dict(fault.headers))
                return
            if fault.kind == "malformed":
                self._send_raw(fault.status, fault.body, "application/json")
                return
            if fault.kind == "disconnect":
                self.close_connection = True
                return
            if fault.kind == "delay":
                fake._sleep(fault.seconds)
                if fake._stop.is_set():
                    self.close_connection = True
                    return
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            self._send_error(400, "request body must be a JSON object with a 'messages' list")
            return
        auth = self.headers.get("Authorization")
        if fake.require_key is not None and auth != f"Bearer {fake.require_key}":
            self._send_error(401, "Incorrect API key provided.")
            return
        if fake.models is not None and request.get("model") not in fake.models:
            self._send_error(404, f"The model `{request.get('model')}` does not exist.")
            return
        try:
            answer = fake.responder(request)
        except Exception as exc:  # noqa: BLE001 - report a broken responder to the client
            self._send_error(500, f"responder failed: {type(exc).__name__}: {exc}")
            return
        if isinstance(answer, dict):
            self._send_json(200, answer)
            return
        texts = [answer] if isinstance(answer, str) else list(answer)
        prompt_tokens = sum(
            word_count(m.get("content") or "") for m in request["messages"] if isinstance(m, dict)
        )
        self._send_json(200, completion_response(request.get("model", "fake-model"), texts, prompt_tokens))

    # ---------------------------------------------------------------- replies

    def _enter(self, record: RecordedRequest) -> None:
        self.fake._enter(record)
        self._counted = True

    def _leave(self) -> None:
        """The request stops counting as in flight once; before the body goes out, because a client that has it
        may send its next request before this thread runs again (which would count one too many)."""
        if getattr(self, "_counted", False):
            self._counted = False
            self.fake._leave()

    def _send_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        self._send_json(status, body, headers)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode("utf-8"), "application/json", headers)

    def _send_raw(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self._leave()
        self.wfile.write(body)
        self.wfile.flush()


def completion_response(
    model: str,
    texts: Sequence[str],
    prompt_tokens: int = 0,
    finish_reasons: Sequence[str] | None = None,
) -> dict:
    """A chat-completion response body with one choice per text (usage counted in words)."""
    reasons = list(finish_reasons) if finish_reasons is not None else ["stop"] * len(texts)
    choices = [
        {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reasons[i]}
        for i, text in enumerate(texts)
    ]
    completion_tokens = sum(word_count(t) for t in texts)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


try:  # the fixture exists only where pytest does; the server itself needs nothing beyond the stdlib
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.fixture
    def fake_openai_server() -> Iterator[FakeOpenAIServer]:
        """A running `FakeOpenAIServer` with the echo responder; configure it inside the test."""
        with FakeOpenAIServer() as server:
            yield server
