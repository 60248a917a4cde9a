"""A `Generator` that samples from any OpenAI-compatible chat-completions endpoint.

Works with the hosted OpenAI API and with local servers that speak the same protocol (vLLM's
``vllm serve``, TGI's messages API, llama.cpp's server, ...). Only the standard library is used
(``urllib`` + ``concurrent.futures``), so this adds no dependency.

``base_url`` is the API root *including* the version segment, exactly as the OpenAI SDK expects it:
``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``. The client POSTs to
``{base_url}/chat/completions``.

Behaviour in brief:

* ``max_concurrency`` HTTP requests at most are in flight per generator (one shared thread pool).
* HTTP 408/409/429, 5xx, connection errors, timeouts and malformed bodies are retried with exponential
  backoff and jitter (``backoff_base * 2**k`` capped at ``backoff_max``); a ``Retry-After`` (seconds
  or HTTP date) or ``retry-after-ms`` header from the server replaces the computed delay. After
  ``max_retries`` retries (``max_retries + 1`` tries) a `SelfDebugError` names the number of tries and
  the last error. Other 4xx answers (400, 401, 403, 404, 422, ...) fail at once with the status and
  the server's own message.
* The API key is read once, at construction, from the environment variable ``api_key_env``. With no
  key (local servers) no ``Authorization`` header is sent. The key never appears in exceptions,
  ``repr``, or the request log; server messages that echo it are redacted.
* ``request_log``: a JSON-lines file that gets one line per HTTP attempt (time, status, latency,
  attempt number, n, token usage when the server reports it, error). No key, no headers.
* With ``use_n=True`` one request asks for all ``n`` samples; a server that answers with fewer
  choices is an error (pass ``use_n=False`` for such servers: ``n`` requests of one sample each, with
  seeds ``seed, seed+1, ...`` so that seeded samples differ).
* `generate` returns the completion texts; the matching ``finish_reason`` values of the last call are
  in `last_finish_reasons`, token/request counts in `usage` (cumulative) and `last_usage`.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import math
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfdebug.core.errors import ConfigError, SelfDebugError
from selfdebug.generation.base import GenerationRequest, Generator, SamplingParams

__all__ = ["OpenAIGenerator", "UsageStats", "parse_retry_after"]

#: Statuses worth retrying: request timeout, conflict (OpenAI uses it for transient locks), rate limit.
_RETRYABLE_4XX = frozenset({408, 409, 429})
#: The longest wait a server's Retry-After header can impose on us, in seconds.
_MAX_RETRY_AFTER = 600.0
#: How much of a server's error body goes into an exception message.
_MAX_ERROR_CHARS = 500


@dataclass
class UsageStats:
    """Counts of what a generator sent and got back.

    ``requests``: logical chat-completion requests that succeeded; ``attempts``: HTTP attempts made
    (including failed ones); ``retries``: attempts that were repeats of an earlier failed one;
    ``completions``: completion texts returned; ``prompt_tokens``/``completion_tokens``: sums of the
    ``usage`` the server reported (0 where it reports none).
    """

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: UsageStats) -> None:
        for field, value in asdict(other).items():
            setattr(self, field, getattr(self, field) + value)


class _Secret:
    """Holds the API key so that no repr, vars() dump or log formatting can show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self):  # never pickle the key along with a generator
        raise TypeError("an API key is not picklable")


class _Cancelled(Exception):
    """Another request of the same batch failed; this one stops without another attempt."""


class _RetryableError(Exception):
    """One failed attempt that a later attempt may fix."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would re-send the Authorization header to wherever they point."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from a ``retry-after-ms`` or ``Retry-After`` header (delta seconds or HTTP date).

    ``headers`` is any mapping with a case-insensitive ``get`` (``http.client.HTTPMessage``) or a plain
    dict. Returns None when neither header is present or readable.
    """
    if headers is None:
        return None

    def get(name: str) -> str | None:
        value = headers.get(name)
        if value is None and isinstance(headers, dict):
            lowered = {str(k).lower(): v for k, v in headers.items()}
            value = lowered.get(name.lower())
        return None if value is None else str(value).strip()

    millis = get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000.0
            if math.isfinite(seconds):
                return min(max(seconds, 0.0), _MAX_RETRY_AFTER)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _server_message(body: bytes) -> str:
    """The human-readable error message inside an error body (OpenAI, vLLM, TGI, FastAPI shapes)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    message: Any = None
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg")
        elif isinstance(error, str):
            message = error
        if not message:
            message = payload.get("message") or payload.get("detail")
    if message is None or message == "":
        message = text or "(empty body)"
    if not isinstance(message, str):
        message = json.dumps(message)
    if len(message) > _MAX_ERROR_CHARS:
        message = message[:_MAX_ERROR_CHARS] + "..."
    return message


class OpenAIGenerator(Generator):
    """Sample chat completions from an OpenAI-compatible server; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        request_log: str | os.PathLike[str] | None = None,
        use_n: bool = True,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base_url = self._check_base_url(base_url)
        self.endpoint = self.base_url + "/chat/completions"
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a non-empty model name, got {model!r}")
        self.model = model
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be an integer >= 1, got {max_concurrency!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        for key, value in (("timeout", timeout), ("backoff_base", backoff_base), ("backoff_max", backoff_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{key} must be a number, got {value!r}")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout!r}")
        if backoff_base < 0 or backoff_max < 0:
            raise ConfigError(
                f"backoff_base and backoff_max must be >= 0, got {backoff_base!r} and {backoff_max!r}"
            )
        if extra_body is not None and not isinstance(extra_body, dict):
            raise ConfigError(f"extra_body must be a mapping of extra request fields, got {extra_body!r}")
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.use_n = bool(use_n)
        self.extra_body = dict(extra_body or {})
        try:
            json.dumps(self.extra_body)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"extra_body must be JSON-serialisable: {exc}") from None
        self.request_log = Path(request_log) if request_log is not None else None
        if self.request_log is not None:
            self.request_log.parent.mkdir(parents=True, exist_ok=True)

        self.api_key_env = api_key_env
        self._api_key = self._read_key(api_key_env)

        host = urllib.parse.urlsplit(self.base_url).hostname
        handlers: list[Any] = [_NoRedirect()]
        if _is_loopback(host):  # a proxy from the environment must not swallow requests to localhost
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._request_seq = 0
        self._rng = random.Random()
        self.usage = UsageStats()
        self.last_usage = UsageStats()
        self.last_finish_reasons: list[list[str | None]] = []

    # ------------------------------------------------------------------ construction helpers

    @staticmethod
    def _check_base_url(base_url: Any) -> str:
        if not isinstance(base_url, str) or not base_url.strip():
            raise ConfigError(f"base_url must be a URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        url = base_url.strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}"
            )
        if parts.username or parts.password:
            raise ConfigError("base_url must not hold credentials; put the API key in the api_key_env variable")
        if parts.query or parts.fragment:
            raise ConfigError(f"base_url must not have a query or fragment, got {base_url!r}")
        if url.endswith("/chat/completions"):
            raise ConfigError(
                f"base_url is the API root (e.g. {url[: -len('/chat/completions')]}), "
                f"not the endpoint; got {base_url!r}"
            )
        return url

    @staticmethod
    def _read_key(api_key_env: str | None) -> _Secret | None:
        if api_key_env is None or api_key_env == "":
            return None
        if not isinstance(api_key_env, str):
            raise ConfigError(f"api_key_env must be the name of an environment variable, got {api_key_env!r}")
        value = os.environ.get(api_key_env, "").strip()
        if not value:
            return None
        if any(ord(ch) < 0x21 or ord(ch) > 0x7E for ch in value):
            # http.client would reject the header with a ValueError that quotes the value.
            raise ConfigError(
                f"the API key in ${api_key_env} holds whitespace or non-ASCII characters; "
                "check how the variable is set"
            )
        return _Secret(value)

    # ------------------------------------------------------------------ public API

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @property
    def has_api_key(self) -> bool:
        """Whether a key was found in the environment (requests carry ``Authorization: Bearer``)."""
        return self._api_key is not None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, api_key={'set' if self.has_api_key else 'unset'}, "
            f"max_concurrency={self.max_concurrency}, timeout={self.timeout}, max_retries={self.max_retries}, "
            f"use_n={self.use_n})"
        )

    def close(self) -> None:
        """Wait for requests in flight and stop the worker threads; a later `generate` starts new ones."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def generate(self, requests: list[GenerationRequest], params: SamplingParams) -> list[list[str]]:
        """``params.n`` completion texts per request, in request order and choice order.

        Raises `SelfDebugError` when any request of the batch fails for good; the others are then
        abandoned (no further attempts are started).
        """
        n = params.n
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"SamplingParams.n must be an integer >= 0, got {n!r}")
        requests = list(requests)
        stats = UsageStats()
        if not requests or n == 0:
            self.last_usage = stats
            self.last_finish_reasons = [[] for _ in requests]
            return [[] for _ in requests]

        bodies: list[tuple[int, int, dict[str, Any], int]] = []  # (request index, first slot, body, k)
        for index, request in enumerate(requests):
            messages = self._check_messages(request, index)
            if self.use_n:
                bodies.append((index, 0, self._body(messages, params, n=n, seed=params.seed), n))
            else:
                for i in range(n):
                    seed = None if params.seed is None else params.seed + i
                    bodies.append((index, i, self._body(messages, params, n=None, seed=seed), 1))

        texts: list[list[str | None]] = [[None] * n for _ in requests]
        reasons: list[list[str | None]] = [[None] * n for _ in requests]
        cancel = threading.Event()
        executor = self._get_executor()
        futures: dict[Future, tuple[int, int, int]] = {}
        for index, slot, body, k in bodies:
            future = executor.submit(self._request, body, k, cancel, stats)
            futures[future] = (index, slot, k)
        try:
            for future in as_completed(futures):
                error = future.exception()
                if error is not None:
                    raise error
                index, slot, k = futures[future]
                for j, (text, reason) in enumerate(future.result()):
                    texts[index][slot + j] = text
                    reasons[index][slot + j] = reason
        except BaseException:
            cancel.set()
            for future in futures:
                future.cancel()
            raise
        finally:
            self.last_usage = stats
            with self._lock:
                self.usage.add(stats)
        self.last_finish_reasons = reasons
        return [[text if text is not None else "" for text in row] for row in texts]

    # ------------------------------------------------------------------ internals

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="openai-client"
                )
            return self._executor

    @staticmethod
    def _check_messages(request: GenerationRequest, index: int) -> list[dict]:
        messages = getattr(request, "messages", None)
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise SelfDebugError(
                f"request {index}: messages must be a non-empty list of {{'role': ..., 'content': ...}} "
                f"dicts, got {type(messages).__name__}"
            )
        return messages

    def _body(self, messages: list[dict], params: SamplingParams, *, n: int | None, seed: int | None) -> dict:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if n is not None:
            body["n"] = n
        if seed is not None:
            body["seed"] = seed
        body.update(self.extra_body)
        return body

    def _redact(self, text: str) -> str:
        if self._api_key is not None:
            text = text.replace(self._api_key.reveal(), "<redacted>")
        return text

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "selfdebug-openai-client",
        }
        if self._api_key is not None:
            headers["Authorization"] = "Bearer " + self._api_key.reveal()
        return headers

    def _backoff(self, retry: int) -> float:
        """Delay before retry number ``retry`` (1-based): exponential, capped, with jitter in [50%, 100%]."""
        delay = min(self.backoff_max, self.backoff_base * (2 ** (retry - 1)))
        with self._lock:
            jitter = self._rng.uniform(0.5, 1.0)
        return delay * jitter

    def _request(
        self, body: dict, expected: int, cancel: threading.Event, stats: UsageStats
    ) -> list[tuple[str, str | None]]:
        """One logical request with retries; returns ``expected`` (text, finish_reason) pairs."""
        try:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise SelfDebugError(f"the chat request cannot be encoded as JSON: {exc}") from None
        with self._lock:
            self._request_seq += 1
            request_id = self._request_seq
        tries = self.max_retries + 1
        last_error = "no attempt made"
        for attempt in range(1, tries + 1):
            if cancel.is_set():
                raise _Cancelled()
            with self._lock:
                stats.attempts += 1
                if attempt > 1:
                    stats.retries += 1
            started = time.monotonic()
            status: int | None = None
            usage: dict[str, int] = {}
            try:
                status, payload = self._attempt(data)
                choices, usage = self._parse(payload, expected)
            except _RetryableError as exc:
                last_error = str(exc)
                wait = exc.retry_after if exc.retry_after is not None else self._backoff(attempt)
                will_retry = attempt < tries
                self._log(request_id, attempt, expected, status or _status_of(exc), started, usage,
                          last_error, wait if will_retry else None)
                if not will_retry:
                    break
                if cancel.wait(wait):
                    raise _Cancelled() from None
                continue
            except SelfDebugError as exc:
                usage = getattr(exc, "usage", usage)
                with self._lock:
                    stats.prompt_tokens += usage.get("prompt_tokens", 0)
                    stats.completion_tokens += usage.get("completion_tokens", 0)
                self._log(request_id, attempt, expected, status or _status_of(exc), started, usage,
                          str(exc), None)
                raise
            self._log(request_id, attempt, expected, status, started, usage, None, None)
            with self._lock:
                stats.requests += 1
                stats.completions += len(choices)
                stats.prompt_tokens += usage.get("prompt_tokens", 0)
                stats.completion_tokens += usage.get("completion_tokens", 0)
            return choices
        raise SelfDebugError(
            f"gave up on {self.endpoint} (model {self.model!r}) after {tries} tries "
            f"(max_retries={self.max_retries}); last error: {last_error}"
        )

    def _attempt(self, data: bytes) -> tuple[int, bytes]:
        """One HTTP POST. Returns (status, body) on 2xx; raises _RetryableError or SelfDebugError."""
        request = urllib.request.Request(self.endpoint, data=data, headers=self._headers(), method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            finally:
                exc.close()
            message = self._redact(_server_message(raw))
            if status in _RETRYABLE_4XX or status >= 500:
                raise _StatusError(
                    f"HTTP {status}: {message}", status, parse_retry_after(exc.headers)
                ) from None
            raise _FatalStatus(self._fatal_message(status, message, exc.headers), status) from None
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _RetryableError(self._redact(_describe_transport_error(exc, self.timeout))) from None

    def _fatal_message(self, status: int, message: str, headers: Any) -> str:
        text = f"{self.endpoint} answered HTTP {status} for model {self.model!r}: {message}"
        if status in (401, 403):
            where = f"${self.api_key_env}" if self.api_key_env else "api_key_env"
            state = "is set" if self.has_api_key else "is not set"
            text += f" (check the API key: {where} {state})"
        elif status == 404:
            text += " (check base_url, which should be the API root ending in /v1, and the model name)"
        elif 300 <= status < 400:
            location = headers.get("Location") if headers is not None else None
            text += f" (redirects are not followed; set base_url to the final URL, redirect target {location!r})"
        return text

    def _parse(self, payload: bytes, expected: int) -> tuple[list[tuple[str, str | None]], dict[str, int]]:
        try:
            response = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            snippet = payload[:120].decode("utf-8", errors="replace")
            raise _RetryableError(f"malformed response body (not JSON): {self._redact(snippet)!r}") from None
        if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
            raise _RetryableError(
                f"malformed response (no 'choices' list): {self._redact(json.dumps(response)[:200])}"
            )
        usage: dict[str, int] = {}
        raw_usage = response.get("usage")
        if isinstance(raw_usage, dict):
            for key in ("prompt_tokens", "completion_tokens"):
                value = raw_usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    usage[key] = value
        raw_choices = response["choices"]
        if not all(isinstance(c, dict) for c in raw_choices):
            raise _RetryableError("malformed response ('choices' holds a non-object)")
        if all(isinstance(c.get("index"), int) for c in raw_choices):
            raw_choices = sorted(raw_choices, key=lambda c: c["index"])
        choices: list[tuple[str, str | None]] = []
        for choice in raw_choices[:expected]:
            message = choice.get("message")
            if not isinstance(message, dict):
                raise _RetryableError("malformed response (a choice has no 'message' object)")
            content = message.get("content")
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise _RetryableError("malformed response (a choice's message content is not a string)")
            reason = choice.get("finish_reason")
            choices.append((content, reason if isinstance(reason, str) else None))
        if len(choices) < expected:
            hint = (
                " (the server may ignore 'n': construct the generator with use_n=False to send one "
                "request per sample)"
                if expected > 1
                else ""
            )
            raise _BadResponse(
                f"{self.endpoint} returned {len(choices)} choice(s) for a request of n={expected}{hint}",
                usage,
            )
        return choices, usage

    def _log(
        self,
        request_id: int,
        attempt: int,
        n: int,
        status: int | None,
        started: float,
        usage: dict[str, int],
        error: str | None,
        retry_in: float | None,
    ) -> None:
        if self.request_log is None:
            return
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "model": self.model,
            "request": request_id,
            "attempt": attempt,
            "n": n,
            "status": status,
            "latency_s": round(time.monotonic() - started, 4),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "error": self._redact(error) if error is not None else None,
            "retry_in_s": round(retry_in, 4) if retry_in is not None else None,
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._log_lock, open(self.request_log, "a", encoding="utf-8") as handle:
            handle.write(line)


class _StatusError(_RetryableError):
    """A retryable HTTP status (429, 5xx, ...)."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        super().__init__(message, retry_after)
        self.status = status


class _FatalStatus(SelfDebugError):
    """A non-retryable HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _BadResponse(SelfDebugError):
    """A well-formed answer that cannot satisfy the request (e.g. too few choices)."""

    def __init__(self, message: str, usage: dict[str, int]) -> None:
        super().__init__(message)
        self.usage = usage


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _describe_transport_error(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(reason, BaseException):
        detail = str(reason) or type(reason).__name__
        return f"connection error: {type(reason).__name__}: {detail}"
    return f"connection error: {reason}"
