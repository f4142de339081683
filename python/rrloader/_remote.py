"""RemoteDataset: a dataset served by a Rerun catalog server (``rerun server``, ``rr.server.Server``).

The dataloader reads it exactly as it reads a ``LocalDataset``: the native engine resolves
every sample with the same latest-at and video code, over chunks fetched from the server
instead of read from files. What comes from where:

* at construction, through rerun-sdk's ``DatasetEntry``: the segment ids, the schema
  (``entry.schema()``) and the index ranges (``entry.get_index_ranges()``) — three calls;
* during iteration, over the catalog's gRPC API (``rerun.cloud.v1alpha1.RerunCloudService``,
  spoken by the engine; this module is only its transport, with grpcio): once per segment,
  its manifest (``GetRrdManifest``: the segment's chunk index, like a file's footer), and
  the chunks each block needs by id (``FetchChunks``), in a few batched calls per block
  (``fetch_concurrency`` at once, default 4). The engine keeps fetched chunks in a cache
  bounded in bytes (``cache_bytes``, default 1 GiB) and manifests in one of their own
  (``manifest_cache_bytes``, default 64 MiB).

Nothing is called per sample in Python: the transport runs once per manifest and once per
batch of chunks, and hands the answer's bytes to the engine untouched.

Faults. Every gRPC call has a deadline (``remote_timeout_s``, default 60 s, for the whole
call including retries). Unavailable servers and transient errors are retried with
exponential backoff (0.1 s, 0.2 s, ...; at most ``remote_retries`` times, default 4) within
that deadline, then fail with an ``RrloaderIOError`` naming the URL, the segment and the
entity. A segment that disappeared from the catalog after the epoch was planned fails with
a ``NotFoundError`` naming it. Construction (rerun-sdk's client) does not retry: an
unreachable catalog fails at once, naming the URL.

Auth. A catalog that requires a token gets it as rerun-sdk's client sends it, an
``authorization: Bearer <token>`` header on every call. The token is, first found: the
``token=`` argument; the token of the ``CatalogClient`` a rerun-sdk ``DatasetEntry`` came from
(``CatalogClient(url, token=...)``); the ``REDAP_TOKEN`` environment variable. Like rerun-sdk,
it must be a JWT, and it is sent only to a host its ``allowed_hosts`` claim names (default
``.cloud.rerun.io``; ``RERUN_INSECURE_SKIP_HOST_CHECK=1`` skips the check), so that a token is
never handed to a server it was not made for. It pickles with the dataset (spawned workers
and ``torchrun`` ranks send it too) and is never printed: not in a repr, not in a message. A
refused call (UNAUTHENTICATED, PERMISSION_DENIED) is not retried: it fails at once with an
``RrloaderIOError`` naming the URL and where the token came from (or that none was sent).

Processes. rerun-sdk's client is not fork-safe (its async runtime's threads do not survive
``fork``), nor is a gRPC channel: a forked DataLoader worker raises ``RrloaderError`` before
any remote call and names the fix, ``multiprocessing_context="spawn"``. A ``RemoteDataset``
pickles as its URL, dataset name, segment filter, options and the metadata read at
construction (so spawned workers and ``torchrun`` ranks plan identically); each process opens
its own gRPC channel on its first fetch (and needs no rerun-sdk client at all).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .errors import InvalidArgumentError, NotFoundError, RrloaderError, RrloaderIOError

DEFAULT_REMOTE_TIMEOUT_S = 60.0
DEFAULT_REMOTE_RETRIES = 4
DEFAULT_REMOTE_CACHE_BYTES = _core.DEFAULT_REMOTE_CACHE_BYTES  # 1 GiB
DEFAULT_MANIFEST_CACHE_BYTES = _core.DEFAULT_MANIFEST_CACHE_BYTES  # 64 MiB
DEFAULT_FETCH_CONCURRENCY = _core.DEFAULT_REMOTE_FETCH_CONCURRENCY  # 4
_BACKOFF_START_S = 0.1
_GRPC_PIN = "grpcio==1.76.0"
_SERVICE = "/rerun.cloud.v1alpha1.RerunCloudService/"
# The engine's calls: whether the answer is a stream, and what a message calls the call.
_METHODS = {"GetRrdManifest": (False, "fetching a segment manifest"), "FetchChunks": (True, "fetching chunks")}

_FORK_MESSAGE = (
    "this process was forked from the one that opened the remote dataset {what}: rerun-sdk's catalog "
    "client is not fork-safe (its async runtime's threads do not survive fork, the first call would "
    "deadlock). Use spawned DataLoader workers — DataLoader(..., multiprocessing_context=\"spawn\") — "
    "or num_workers=0"
)


def is_rerun_dataset(obj: Any) -> bool:
    """True for rerun-sdk's ``DatasetEntry`` and ``DatasetSelection`` (a filtered view)."""
    module = type(obj).__module__ or ""
    return module.startswith("rerun.catalog") and hasattr(obj, "segment_ids") and hasattr(obj, "schema")


def as_dataset(obj: Any) -> Any:
    """``obj`` itself, or a ``RemoteDataset`` around a rerun-sdk dataset entry or selection."""
    if isinstance(obj, RemoteDataset) or not is_rerun_dataset(obj):
        return obj
    return RemoteDataset.from_entry(obj)


# --------------------------------------------------------------------------- remote calls
class _DeadlineExceeded(Exception):
    pass


def _run_with_deadline(fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()`` on a helper thread; raises _DeadlineExceeded if it has not returned in time.

    A call that overruns is abandoned, not stopped (rerun-sdk's calls cannot be cancelled):
    its daemon thread finishes or fails on its own (rerun's own gRPC deadlines are 10 s).
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 — handed to the waiting thread
            box["error"] = e
        finally:
            done.set()

    threading.Thread(target=run, name="rrloader-remote-call", daemon=True).start()
    if not done.wait(max(timeout_s, 0.0)):
        raise _DeadlineExceeded()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _first_line(e: BaseException | None) -> str:
    if e is None:
        return "no answer"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _gave_up(what: str, timeout_s: float, attempts: int, detail: str | None) -> RrloaderIOError:
    """The error after the last attempt: ``detail`` is the last failure's first line, or None
    when the deadline ran out first."""
    if detail is None:
        return RrloaderIOError(f"{what}: no answer within {timeout_s:g} s (remote_timeout_s; {attempts} attempt(s))")
    return RrloaderIOError(f"{what} failed after {attempts} attempt(s) (remote_timeout_s={timeout_s:g} s): {detail}")


def _refused(url: str, timeout_s: float) -> bool:
    """True when nothing listens at the URL's explicit host:port (the kernel refuses the
    connection). Anything else — a listener, a timeout, no port in the URL — is left to
    rerun-sdk's client, which knows proxies and TLS."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return False
    if not host or not port:
        return False
    try:
        with socket.create_connection((host, port), timeout=min(1.0, timeout_s)):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _is_not_found(e: BaseException) -> bool:
    # rerun_bindings.NotFoundError (a missing segment's manifest), LookupError (a missing
    # dataset), or a gRPC NotFound status in a RuntimeError (chunks of a removed segment).
    return type(e).__name__ == "NotFoundError" or type(e) is LookupError or "(NotFound)" in str(e)


def _require_grpc() -> Any:
    """grpcio (the transport of chunk fetches), or a clear error naming the package."""
    try:
        import grpc
    except ImportError as e:
        raise RrloaderError(
            f"reading a remote dataset needs the grpcio package, which is not installed: pip install {_GRPC_PIN}"
        ) from e
    return grpc


def _grpc_target(url: str) -> tuple[str, bool]:
    """(host:port, tls) of a catalog URL: rerun+http:// is plaintext HTTP/2 (default port
    51234, as `rerun server`), rerun+https:// and rerun:// are TLS (default port 443)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InvalidArgumentError(f"not a catalog URL: {url!r} ({e})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("rerun+http", "rerun+https", "rerun", "http", "https") or not parts.hostname:
        raise InvalidArgumentError(f"not a catalog URL: {url!r} (expected rerun+http://host:port)")
    tls = scheme in ("rerun+https", "rerun", "https")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{host}:{port or (443 if tls else 51234)}", tls


# --------------------------------------------------------------------------- auth
TOKEN_ENV = "REDAP_TOKEN"
SKIP_HOST_CHECK_ENV = "RERUN_INSECURE_SKIP_HOST_CHECK"
_DEFAULT_ALLOWED_HOSTS = ".cloud.rerun.io"  # rerun-sdk's default for a token without the claim
_AUTH_CODES = ("UNAUTHENTICATED", "PERMISSION_DENIED")


def _b64url_json(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _is_jwt(token: str) -> bool:
    """The shape rerun-sdk requires of a token: header.payload.signature, the header a JSON
    object naming its algorithm (``jsonwebtoken::decode_header``)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return False
    try:
        header = _b64url_json(parts[0])
    except (ValueError, binascii.Error):
        return False
    return isinstance(header, dict) and isinstance(header.get("alg"), str)


def _norm_host(host: str) -> str:
    host = host.strip().lower()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return host
    return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed


def _host_matches(pattern: str, host: str) -> bool:
    """rerun-sdk's (RFC 6265) rule: '.example.com' matches its subdomains, not itself; any
    other pattern matches exactly."""
    host = _norm_host(host)
    if pattern.startswith("."):
        suffix = _norm_host(pattern[1:]).split(".")
        labels = host.split(".")
        return len(labels) > len(suffix) and labels[-len(suffix) :] == suffix
    return _norm_host(pattern) == host


def _token_allowed_for_host(token: str, host: str) -> bool:
    """Whether rerun-sdk would send ``token`` to ``host``: its (unverified) ``allowed_hosts``
    claim, a pattern or a list of them, names the host (default ``.cloud.rerun.io``); a payload
    that does not parse does not restrict; ``RERUN_INSECURE_SKIP_HOST_CHECK=1`` skips the check."""
    if os.environ.get(SKIP_HOST_CHECK_ENV) == "1":
        return True
    try:
        claims = _b64url_json(token.split(".")[1])
    except (ValueError, IndexError, binascii.Error):
        return True
    if not isinstance(claims, dict):
        return True
    hosts = claims.get("allowed_hosts")
    if isinstance(hosts, str):
        hosts = [hosts]
    elif hosts is None:
        hosts = []
    elif not (isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)):
        return True
    return any(_host_matches(p, host) for p in hosts or [_DEFAULT_ALLOWED_HOSTS])


def _entry_token(entry: Any) -> str | None:
    """The token of the rerun-sdk ``CatalogClient`` a ``DatasetEntry`` came from, if it was
    given one (``CatalogClient(url, token=...)``)."""
    try:
        token = entry.catalog._internal.token
    except Exception:  # noqa: BLE001 — an entry of another rerun-sdk version: no token from it
        return None
    return token if isinstance(token, str) and token.strip() else None


def _resolve_token(token: Any, entry: Any) -> tuple[str | None, str | None]:
    """(token, where it came from) — the argument, the entry's client, ``REDAP_TOKEN`` — or
    (None, None). A malformed argument is an error (the token is not quoted); a malformed
    ``REDAP_TOKEN`` is ignored with a warning, as rerun-sdk does."""
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise InvalidArgumentError(
                f"token must be a non-empty string (a JWT), got a {type(token).__name__}"
            )
        token = token.strip()
        if not _is_jwt(token):
            raise InvalidArgumentError(
                "token is not a JWT (header.payload.signature), which rerun-sdk requires"
            )
        return token, "the token= argument"
    if entry is not None:
        found = _entry_token(entry)
        if found is not None:
            return found.strip(), "the DatasetEntry's CatalogClient"
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        if _is_jwt(env):
            return env, f"the {TOKEN_ENV} environment variable"
        import warnings

        warnings.warn(f"{TOKEN_ENV} is set but is not a JWT: ignored (as rerun-sdk ignores it)", stacklevel=3)
    return None, None


def _is_auth_error(e: BaseException) -> bool:
    # rerun-sdk raises PermissionError for UNAUTHENTICATED / PERMISSION_DENIED answers.
    text = str(e)
    return isinstance(e, PermissionError) or "(Unauthenticated)" in text or "(PermissionDenied)" in text


def _is_fatal(e: BaseException) -> bool:
    # Our own errors and programming errors are not made better by asking again.
    return isinstance(e, (RrloaderError, TypeError, AttributeError, KeyboardInterrupt, SystemExit))


def _typed_index_values(values: Any, kind: str) -> pa.Array:
    """Index values as rerun-sdk's reader takes them: int64, or timestamp/duration ns arrays."""
    from ._dataset import _as_int64

    ints = pa.array(_as_int64(values), type=pa.int64())
    if kind == "timestamp":
        return ints.cast(pa.timestamp("ns"))
    if kind == "duration":
        return ints.cast(pa.duration("ns"))
    return ints


def _timeline_kind(t: pa.DataType) -> str | None:
    if pa.types.is_int64(t):
        return "sequence"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_duration(t):
        return "duration"
    return None


# --------------------------------------------------------------------------- shared state
class _RemoteState:
    """What every view of one remote dataset shares in one process: the connection, the
    metadata read at construction, the segment-manifest cache and the native dataset.

    Thread-safe: the engine's fetch threads call ``fetch`` concurrently.
    """

    def __init__(self, spec: dict[str, Any], entry: Any = None):
        self.spec = spec
        self.url: str = spec["url"]
        self.name: str = spec["name"]
        self.timeout_s: float = spec["remote_timeout_s"]
        self.retries: int = spec["remote_retries"]
        self.all_segments: list[str] = spec["segment_ids"]
        self.schema: pa.Schema = spec["schema"]
        self.index_ranges: pa.Table = spec["index_ranges"]
        # The token and where it came from (see "Auth" above); never printed.
        self.token: str | None = spec.get("token")
        self.token_source: str | None = spec.get("token_source")
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._entry = entry
        self._grpc_channel: Any = None
        self._grpc_calls: dict[str, Any] = {}
        self._metadata: tuple[tuple[str, Any], ...] | None = None
        self._core_obj: Any = None
        self.timelines: dict[str, str] = {}
        for f in self.schema:
            md = f.metadata or {}
            if md.get(b"rerun:kind") == b"index":
                kind = _timeline_kind(f.type)
                if kind is not None:
                    self.timelines[(md.get(b"rerun:index_name") or f.name.encode()).decode()] = kind

    def __reduce__(self):
        # Spawned workers and torchrun ranks get the URL, name, options and the metadata this
        # process planned with; each connects on its first fetch.
        return (_RemoteState, (self.spec,))

    def describe(self) -> str:
        return f"catalog {self.url} (dataset {self.name!r})"

    # ----------------------------------------------------------------- auth
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    def sends_token(self) -> bool:
        """Whether this process sends the token (rerun-sdk's allowed_hosts rule)."""
        return self.token is not None and _token_allowed_for_host(self.token, self.host())

    def metadata(self) -> tuple[tuple[str, Any], ...]:
        """The metadata of every call: the entry name, and the token where it may be sent."""
        if self._metadata is None:
            md: list[tuple[str, Any]] = [("x-rerun-entry-name-bin", self.name.encode())]
            if self.sends_token():
                md.append(("authorization", f"Bearer {self.token}"))
            self._metadata = tuple(md)
        return self._metadata

    def redact(self, text: str) -> str:
        """``text`` without the token (a server may quote what it was sent)."""
        return text.replace(self.token, "<token>") if self.token else text

    def auth_error(self, what: str, detail: str, *, named: bool = True) -> RrloaderIOError:
        """The error of a refused call: what was sent and what to do, after the catalog's URL
        (``named=False``: the engine puts it in front)."""
        if self.token is None:
            hint = (
                "no token was sent: pass RemoteDataset(..., token=...), open the entry with "
                f"CatalogClient(url, token=...), or set {TOKEN_ENV}"
            )
        elif not self.sends_token():
            hint = (
                f"the token (from {self.token_source}) was not sent: its allowed_hosts claim does not name "
                f"host {self.host()!r} (rerun-sdk's rule; {SKIP_HOST_CHECK_ENV}=1 sends it anyway)"
            )
        else:
            hint = f"the server rejected the token (from {self.token_source})"
        prefix = f"{self.describe()}: " if named else ""
        return RrloaderIOError(
            f"{prefix}{what}: the catalog refused the credentials: {hint} ({self.redact(detail)})"
        )

    def check_process(self) -> None:
        if os.getpid() != self.pid:
            raise RrloaderError(_FORK_MESSAGE.format(what=f"{self.name!r} on {self.url}"))

    # ----------------------------------------------------------------- calls with deadlines
    def call(
        self,
        fn: Callable[[bool], Any],
        what: str,
        *,
        retries: int | None = None,
        not_found: Callable[[BaseException], BaseException] | None = None,
        named: bool = True,
        hint: str = "",
    ) -> Any:
        """``fn(retrying_not_found)`` with the deadline, retries and backoff described above.

        A not-found answer is retried once with ``fn(True)`` (which should drop cached
        handles: a server restarted on the same URL does not know the old ones), then turned
        into ``not_found(e)``. ``named=False``: the message leaves the catalog out (the engine
        puts it in front of fetch errors). ``hint`` follows ``what`` in the message of a call
        that failed or timed out (not in that of refused credentials).
        """
        retries = self.retries if retries is None else retries
        deadline = time.monotonic() + self.timeout_s
        delay = _BACKOFF_START_S
        attempts = 0
        fresh = False
        last: BaseException | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempts += 1
            try:
                return _run_with_deadline(lambda f=fresh: fn(f), remaining)
            except _DeadlineExceeded:
                last = None
                break
            except BaseException as e:  # noqa: BLE001
                if _is_fatal(e):
                    raise
                if _is_auth_error(e):  # asking again will not help
                    raise self.auth_error(what, _first_line(e)) from None
                if _is_not_found(e):
                    if not fresh:
                        fresh = True
                        continue
                    if not_found is not None:
                        raise not_found(e) from None
                last = e
                if attempts > retries:
                    break
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay *= 2
        prefix = f"{self.describe()}: " if named else ""
        detail = None if last is None else self.redact(_first_line(last))
        raise _gave_up(prefix + what + hint, self.timeout_s, attempts, detail)

    def entry(self) -> Any:
        """The live DatasetEntry (connected now in a fresh process)."""
        self.check_process()
        with self._lock:
            if self._entry is not None:
                return self._entry

        def connect(_fresh: bool) -> Any:
            return _connect(self.url, self.name, self.token)

        entry = self.call(
            connect,
            "connecting",
            not_found=lambda e: NotFoundError(
                f"{self.describe()}: no such dataset on the server ({_first_line(e)})"
            ),
        )
        with self._lock:
            if self._entry is None:
                self._entry = entry
            return self._entry

    # ----------------------------------------------------------------- gRPC transport
    def _channel(self) -> Any:
        """This process's gRPC channel (opened on first use: never inherited through fork)."""
        self.check_process()
        with self._lock:
            if self._grpc_channel is None:
                grpc = _require_grpc()
                target, tls = _grpc_target(self.url)
                options = [
                    # a block's chunks can be large: no message size limit (the server's is 4 GiB)
                    ("grpc.max_receive_message_length", -1),
                    ("grpc.max_send_message_length", -1),
                    ("grpc.enable_retries", 0),  # retries are ours, within the deadline
                ]
                if tls:
                    self._grpc_channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
                else:
                    self._grpc_channel = grpc.insecure_channel(target, options=options)
                self._grpc_calls = {}
            return self._grpc_channel

    def _grpc_call(self, method: str) -> Any:
        channel = self._channel()
        with self._lock:
            call = self._grpc_calls.get(method)
            if call is None:
                streaming = _METHODS[method][0]
                make = channel.unary_stream if streaming else channel.unary_unary
                # No (de)serializers: the engine encodes requests and decodes answers itself.
                call = make(_SERVICE + method, request_serializer=None, response_deserializer=None)
                self._grpc_calls[method] = call
            return call

    def rpc(self, method: str, request: bytes, *, deadline: float | None = None) -> list[bytes]:
        """One call of the catalog's gRPC service for the engine: the answer's messages.

        The deadline (``deadline``, a ``time.monotonic()`` instant, when the call is part of a
        batch that started earlier), retries and backoff described above. NOT_FOUND is a NotFoundError at
        once (the engine tells a removed segment from stale chunk keys); errors that asking
        again will not fix (a malformed request, a method the server lacks, no permission)
        fail at once too; so does a refused token (UNAUTHENTICATED, PERMISSION_DENIED). The
        engine puts the dataset, segment and entity in front.
        """
        grpc = _require_grpc()
        if method not in _METHODS:
            raise InvalidArgumentError(f"unknown catalog method {method!r}")
        streaming, what = _METHODS[method]
        call = self._grpc_call(method)
        metadata = self.metadata()
        retryable = {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNKNOWN,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED,
        }
        if deadline is None:
            deadline = time.monotonic() + self.timeout_s
        delay = _BACKOFF_START_S
        attempts = 0
        last: Any = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempts += 1
            try:
                if streaming:
                    return list(call(request, timeout=remaining, metadata=metadata))
                return [call(request, timeout=remaining, metadata=metadata)]
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    last = None
                    break
                if code == grpc.StatusCode.NOT_FOUND:
                    details = self.redact(e.details() or "")
                    raise NotFoundError(f"{what}: the server answered NOT_FOUND: {details}") from None
                if code.name in _AUTH_CODES:
                    raise self.auth_error(what, f"{code.name}: {e.details()}", named=False) from None
                if code not in retryable:
                    details = self.redact(e.details() or "")
                    raise RrloaderIOError(
                        f"{what} failed: the server answered {code.name}: {details} ({self.url})"
                    ) from None
                last = e
                if attempts > self.retries:
                    break
                time.sleep(max(0.0, min(delay, deadline - time.monotonic())))
                delay *= 2
        detail = None
        if last is not None:
            lines = (last.details() or "").strip().splitlines()
            detail = self.redact(f"{last.code().name}: {lines[0] if lines else ''}")
        raise _gave_up(what, self.timeout_s, attempts, detail)

    def rpc_many(self, method: str, requests: list[bytes], in_flight: int) -> list[Any]:
        """Many calls of one method for the engine, at most ``in_flight`` on the wire at once,
        from this one thread: one answer per request, in order — its messages, or the
        exception ``rpc`` would raise.

        A block's first touch of many segments asks for their manifests this way: one
        round of gRPC futures instead of one engine thread (and one GIL hand-off) per call,
        and many more calls in flight (each is small: the server's and the wire's latency
        dominate). A call that fails is made again through ``rpc`` (its retries, backoff and
        error mapping), within the deadline of the whole batch (not a fresh one: a server that
        stopped answering fails the batch after ``remote_timeout_s``, not twice that); one that
        ran out of time is not made again.
        """
        grpc = _require_grpc()
        if method not in _METHODS:
            raise InvalidArgumentError(f"unknown catalog method {method!r}")
        streaming = _METHODS[method][0]
        call = self._grpc_call(method)
        metadata = self.metadata()
        deadline = time.monotonic() + self.timeout_s
        out: list[Any] = [None] * len(requests)
        step = max(1, int(in_flight))
        for lo in range(0, len(requests), step):
            hi = min(len(requests), lo + step)
            remaining = max(0.001, deadline - time.monotonic())
            # Both kinds start on creation: a unary future, a stream's call object.
            pending = [
                call(r, timeout=remaining, metadata=metadata) if streaming else call.future(r, timeout=remaining,
                                                                                              metadata=metadata)
                for r in requests[lo:hi]
            ]
            for k, p in enumerate(pending, start=lo):
                try:
                    out[k] = list(p) if streaming else [p.result()]
                except grpc.RpcError as e:
                    if e.code().name in _AUTH_CODES:  # refused: not asked again
                        detail = f"{e.code().name}: {e.details()}"
                        out[k] = self.auth_error(_METHODS[method][1], detail, named=False)
                        continue
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        out[k] = _gave_up(_METHODS[method][1], self.timeout_s, 1, None)
                        continue
                    try:  # once more on its own: rpc's retries and messages, the batch's deadline
                        out[k] = self.rpc(method, requests[k], deadline=deadline)
                    except Exception as e:  # noqa: BLE001 - handed to the engine, which maps it
                        out[k] = e
        return out

    # ----------------------------------------------------------------- native dataset
    def core(self) -> Any:
        self.check_process()
        with self._lock:
            if self._core_obj is None:
                # A weak reference: the native dataset must not keep this state alive (nanobind
                # objects take no part in garbage collection, a cycle would never be freed).
                self._core_obj = _core.RemoteDataset(
                    self.all_segments,
                    self.schema,
                    _weak_rpc(self),
                    int(self.spec["cache_bytes"]),
                    int(self.spec["fetch_concurrency"]),
                    self.describe(),
                    manifest_cache_bytes=int(self.spec.get("manifest_cache_bytes", DEFAULT_MANIFEST_CACHE_BYTES)),
                    rpc_many=_weak_rpc_many(self),
                )
            return self._core_obj


def _weak_rpc(state: _RemoteState) -> Callable[[str, bytes], list[bytes]]:
    ref = weakref.ref(state)

    def rpc(method: str, request: bytes) -> list[bytes]:
        s = ref()
        if s is None:
            raise RrloaderError("the remote dataset was closed while the engine still used it")
        return s.rpc(method, request)

    return rpc


def _weak_rpc_many(state: _RemoteState) -> Callable[[str, list[bytes], int], list[Any]]:
    ref = weakref.ref(state)

    def rpc_many(method: str, requests: list[bytes], in_flight: int) -> list[Any]:
        s = ref()
        if s is None:
            raise RrloaderError("the remote dataset was closed while the engine still used it")
        return s.rpc_many(method, requests, in_flight)

    return rpc_many


# --------------------------------------------------------------------------- public class
class RemoteDataset:
    """A dataset on a Rerun catalog server, for ``DataSource(dataset=...)``.

    ``DataSource(dataset=entry)`` with a rerun-sdk ``DatasetEntry`` (or a
    ``DatasetSelection`` from ``entry.filter_segments(...)``) wraps it in one of these with
    the default options; build one yourself to choose them::

        RemoteDataset("rerun+http://127.0.0.1:51234", "robot_runs", remote_timeout_s=30)
        RemoteDataset.from_entry(client.get_dataset("robot_runs"), cache_bytes=4 << 30)

    - ``segments``: an allow-list of segment ids (None: all).
    - ``remote_timeout_s``: the deadline of each remote call, retries included (default 60).
    - ``remote_retries``: retries of a call that failed to connect (default 4).
    - ``cache_bytes``: fetched chunks kept per process (default 1 GiB), so later epochs
      read them without the server; a chunk that falls out is fetched again when needed.
    - ``manifest_cache_bytes``: segment manifests (chunk indexes) kept per process
      (default 64 MiB).
    - ``fetch_concurrency``: gRPC calls in flight per block (default 4).
    - ``token``: the catalog's access token, a JWT, sent as ``authorization: Bearer ...`` on
      every call (default: the token of the entry's ``CatalogClient``, else ``REDAP_TOKEN``;
      see "Auth" in the module's documentation). Pickled with the dataset, never printed.

    Shaped like ``LocalDataset`` / rerun's ``DatasetEntry`` where the dataloader needs it:
    ``segment_ids()``, ``schema()``, ``timelines()``, ``get_index_ranges()``,
    ``filter_segments()``, ``reader()``. Views share the connection and the chunk cache.
    A content filter of a ``DatasetSelection`` is ignored (fields name their columns).

    Immutable; thread-safe (the engine's fetch threads use it concurrently). Each process has
    its own connection and cache.
    """

    def __init__(
        self,
        url: str,
        name: str,
        *,
        segments: Sequence[str] | None = None,
        remote_timeout_s: float = DEFAULT_REMOTE_TIMEOUT_S,
        remote_retries: int = DEFAULT_REMOTE_RETRIES,
        cache_bytes: int = DEFAULT_REMOTE_CACHE_BYTES,
        manifest_cache_bytes: int = DEFAULT_MANIFEST_CACHE_BYTES,
        fetch_concurrency: int = DEFAULT_FETCH_CONCURRENCY,
        token: str | None = None,
        _entry: Any = None,
    ):
        if not isinstance(url, str) or not url:
            raise InvalidArgumentError(f"RemoteDataset needs a catalog URL such as 'rerun+http://host:51234', got {url!r}")
        if not (float(remote_timeout_s) > 0):
            raise InvalidArgumentError(f"remote_timeout_s must be > 0, got {remote_timeout_s!r}")
        if int(remote_retries) < 0 or int(cache_bytes) < 0 or int(manifest_cache_bytes) < 0 or int(fetch_concurrency) < 1:
            raise InvalidArgumentError(
                "remote_retries, cache_bytes and manifest_cache_bytes must be >= 0 and fetch_concurrency >= 1, got "
                f"{remote_retries!r}, {cache_bytes!r}, {manifest_cache_bytes!r}, {fetch_concurrency!r}"
            )
        _grpc_target(url)  # a URL the transport cannot use fails here, not at the first fetch
        _require_grpc()
        token, token_source = _resolve_token(token, _entry)
        spec: dict[str, Any] = {
            "url": url,
            "name": str(name),
            "remote_timeout_s": float(remote_timeout_s),
            "remote_retries": int(remote_retries),
            "cache_bytes": int(cache_bytes),
            "manifest_cache_bytes": int(manifest_cache_bytes),
            "fetch_concurrency": int(fetch_concurrency),
            "token": token,
            "token_source": token_source,
        }
        state = _RemoteState({**spec, "segment_ids": [], "schema": pa.schema([]), "index_ranges": pa.table({})}, _entry)
        # Connect and read the metadata now (one attempt: an unreachable catalog fails at once;
        # rerun-sdk's own connect takes about 2 s to give up on a refused connection).
        if _entry is None and _refused(url, state.timeout_s):
            raise RrloaderIOError(f"{state.describe()}: connecting failed: connection refused (is the server running?)")
        entry = state._entry if _entry is not None else state.call(
            lambda _f: _connect(url, str(name), token),
            "connecting",
            retries=0,
            hint=" (is the server running?)",
            not_found=lambda e: NotFoundError(f"{state.describe()}: no such dataset on the server ({_first_line(e)})"),
        )

        def metadata(_fresh: bool) -> tuple[list[str], pa.Schema, pa.Table]:
            return (
                sorted(entry.segment_ids()),
                entry.schema().to_arrow(),
                entry.get_index_ranges().to_arrow_table(),
            )

        ids, schema, ranges = state.call(metadata, "reading segments, schema and index ranges", retries=0)
        self._state = _RemoteState({**spec, "segment_ids": ids, "schema": schema, "index_ranges": ranges}, entry)
        self._segments = None if segments is None else list(segments)

    @classmethod
    def from_entry(cls, entry: Any, **options: Any) -> RemoteDataset:
        """Around a rerun-sdk ``DatasetEntry`` or ``DatasetSelection`` (its segments kept)."""
        if not is_rerun_dataset(entry):
            raise InvalidArgumentError(f"expected a rerun-sdk DatasetEntry or DatasetSelection, got {entry!r}")
        segments = options.pop("segments", None)
        if not hasattr(entry, "segment_store"):  # a DatasetSelection: its entry plus its segments
            selected = list(entry.segment_ids())
            segments = selected if segments is None else [s for s in segments if s in set(selected)]
            entry = entry.dataset
        return cls(entry.catalog.url, entry.name, segments=segments, _entry=entry, **options)

    @classmethod
    def _view(cls, state: _RemoteState, segments: list[str] | None) -> RemoteDataset:
        view = cls.__new__(cls)
        view._state = state
        view._segments = segments
        return view

    def __reduce__(self):
        return (RemoteDataset._view, (self._state, self._segments))

    def __repr__(self) -> str:
        return f"RemoteDataset({self._state.url!r}, {self._state.name!r}, segments={len(self.segment_ids())})"

    # ----------------------------------------------------------------- metadata
    @property
    def url(self) -> str:
        return self._state.url

    @property
    def name(self) -> str:
        return self._state.name

    def segment_ids(self) -> list[str]:
        """Segment ids, sorted (as of construction)."""
        ids = self._state.all_segments
        if self._segments is not None:
            wanted = set(self._segments)
            ids = [s for s in ids if s in wanted]
        return list(ids)

    def schema(self) -> pa.Schema:
        """The catalog's schema (index, data and control fields with rerun:* metadata)."""
        return self._state.schema

    arrow_schema = schema

    def timelines(self) -> dict[str, str]:
        """Timeline name -> kind ('sequence', 'timestamp' or 'duration')."""
        return dict(self._state.timelines)

    def index_columns(self) -> list[str]:
        return sorted(self._state.timelines)

    def component_columns(self) -> list[str]:
        return [f.name for f in self._state.schema if f.metadata and f.metadata.get(b"rerun:kind") == b"data"]

    def get_index_ranges(self, index: str | None = None) -> pa.Table:
        """Per segment: ``rerun_segment_id`` and ``<timeline>:start`` / ``<timeline>:end`` (inclusive)."""
        table = self._state.index_ranges
        if index is not None:
            if index not in self._state.timelines:
                raise NotFoundError(f"no timeline {index!r} in the dataset ({self._state.describe()})")
            table = table.select(["rerun_segment_id", f"{index}:start", f"{index}:end"])
        ids = self.segment_ids()
        mask = pc.is_in(table["rerun_segment_id"], value_set=pa.array(ids, pa.string()))
        table = table.filter(mask)
        # Sorted by segment id, as LocalDataset gives it.
        return table.take(pc.sort_indices(table["rerun_segment_id"]))

    def cache_stats(self) -> dict[str, int]:
        """The remote fetch counters in this process: ``fetches`` (FetchChunks calls),
        ``chunks_fetched``, ``fetched_bytes`` (the chunks' Arrow IPC bytes),
        ``on_demand_chunks`` (fetched alone when first read, not ahead with their block),
        ``manifest_fetches`` / ``manifest_bytes``, the chunk cache's ``hits`` / ``misses`` /
        ``size_bytes`` / ``capacity_bytes``, ``fetch_errors``, ``shared_waits``."""
        return dict(self._core.cache_stats())

    # ----------------------------------------------------------------- views
    def filter_segments(self, segments: str | Sequence[str]) -> RemoteDataset:
        ids = [segments] if isinstance(segments, str) else list(segments)
        if self._segments is not None:
            keep = set(self._segments)
            ids = [s for s in ids if s in keep]
        return RemoteDataset._view(self._state, ids)

    # ----------------------------------------------------------------- engine hooks
    @property
    def _core(self) -> Any:
        return self._state.core()

    def _reopened(self) -> RemoteDataset:
        """Called by the dataloader in a forked child: refused (see the module docstring)."""
        self._state.check_process()
        return self

    # ----------------------------------------------------------------- reading
    def reader(
        self,
        index: str | None,
        *,
        segments: Sequence[str] | None = None,
        contents: str | Sequence[str] | None = None,
        using_index_values: Any | Mapping[str, Any] | None = None,
        fill_latest_at: bool = False,
        include_semantically_empty_columns: bool = False,
        include_tombstone_columns: bool = False,
        index_range: tuple[Any, Any] | None = None,
    ) -> pa.Table:
        """rerun-sdk's ``DatasetEntry.reader(...)``, materialized as a ``pyarrow.Table``.

        Takes the arguments of ``LocalDataset.reader`` (``using_index_values`` as a dict
        ``{segment_id: values}`` or one array; ``index_range`` inclusive). Used by the
        dataloader only for Python decoders that override ``context_range``.
        """
        state = self._state
        seg_filter = self.segment_ids()
        if segments is not None:
            wanted = {segments} if isinstance(segments, str) else set(segments)
            seg_filter = [s for s in seg_filter if s in wanted]
        kind = state.timelines.get(index) if index is not None else None
        if index is not None and kind is None:
            raise NotFoundError(f"no timeline {index!r} in the dataset ({state.describe()})")
        values = None
        if using_index_values is not None:
            if index is None:
                raise InvalidArgumentError("using_index_values needs an index")
            if isinstance(using_index_values, Mapping):
                values = {str(k): _typed_index_values(v, kind) for k, v in using_index_values.items()}
                seg_filter = [s for s in seg_filter if s in values]
            else:
                values = _typed_index_values(using_index_values, kind)

        def read(_fresh: bool) -> pa.Table:
            from datafusion import col, lit

            view = state.entry()
            if contents is not None:
                view = view.filter_contents([contents] if isinstance(contents, str) else list(contents))
            view = view.filter_segments(seg_filter)
            df = view.reader(
                index=index,
                using_index_values=values,
                fill_latest_at=bool(fill_latest_at),
                include_semantically_empty_columns=bool(include_semantically_empty_columns),
                include_tombstone_columns=bool(include_tombstone_columns),
            )
            if index_range is not None:
                from ._dataset import _as_time_int

                lo, hi = (_typed_index_values(np.array([_as_time_int(v)]), kind)[0] for v in index_range)
                df = df.filter((col(index) >= lit(lo)) & (col(index) <= lit(hi)))
            return df.to_arrow_table()

        return state.call(read, "reading")


def _connect(url: str, name: str, token: str | None = None) -> Any:
    import rerun as rr

    return rr.catalog.CatalogClient(url, token=token).get_dataset(name)
