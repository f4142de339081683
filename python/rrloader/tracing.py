"""Optional OpenTelemetry tracing for rrloader (same switches as rerun's dataloader tracing).

Tracing is on only when all three hold:

* ``TELEMETRY_ENABLED`` is truthy (``1``, ``true``, ``yes``, ``on``; case-insensitive),
* an OTLP endpoint is set in ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``,
* the OpenTelemetry packages are importable: ``opentelemetry-api``, ``opentelemetry-sdk`` and
  the OTLP/gRPC exporter ``opentelemetry-exporter-otlp-proto-grpc``. When telemetry is asked
  for but one of them is missing, a ``RuntimeWarning`` is issued once and tracing stays off.

Spans are exported over OTLP/gRPC through a batch span processor, under the service name
``OTEL_SERVICE_NAME`` (default ``rrloader``). Example::

    TELEMETRY_ENABLED=true OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://localhost:4317 python train.py

The configuration is read lazily, on the first use of a helper, once per process (again in
a forked child). Until then, and for good when tracing is off, nothing of OpenTelemetry is
imported and every helper is a no-op that costs one check of a cached module global.

rrloader keeps its own ``TracerProvider``; it does not replace the application's global one.
Spans still nest with the application's spans, because the OpenTelemetry context (the
current span) is shared by every tracer in the process.

Helpers:

* ``tracing_scope(name)`` — a span around a ``with`` block;
* ``with_tracing(name)`` — a decorator: a span around each call of a function, or around the
  whole iteration of a generator function (current only while the generator body runs, so
  the consumer's time between items belongs to the consumer's spans, not to the generator's);
* ``record_span(name, start_ns, end_ns, attributes)`` — an already finished span with explicit
  times, e.g. the engine's per-block fetch and decode stages;
* ``current_carrier()`` / ``attach_carrier(carrier)`` / ``detach_carrier(token)`` — carry the
  current span to another process (W3C ``traceparent``), e.g. into DataLoader workers that
  unpickle a dataset;
* ``bind_context(fn)`` — run ``fn`` in another thread under the caller's current span.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = [
    "attach_carrier",
    "bind_context",
    "current_carrier",
    "detach_carrier",
    "enabled",
    "record_span",
    "tracing_scope",
    "with_tracing",
]

AttributeValue = int | float | str | bool
F = TypeVar("F", bound=Callable[..., Any])

_TRUTHY = frozenset({"1", "true", "yes", "on"})
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_SERVICE_NAME = "rrloader"
TRACER_NAME = "rrloader"


class _NoopSpan:
    """What ``tracing_scope`` yields when tracing is off: accepts and drops everything."""

    __slots__ = ()

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        pass

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        pass

    def record_exception(self, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        pass

    def is_recording(self) -> bool:
        return False


NOOP_SPAN = _NoopSpan()
_NOOP_SCOPE = contextlib.nullcontext(NOOP_SPAN)  # reusable and reentrant


# --- state ---------------------------------------------------------------------------------------
#
# `_tracer` is the whole fast path: None = off (checked once, nothing to do), a Tracer = on,
# `_UNRESOLVED` = not decided yet in this process. The slow path (`_resolve`) runs once per
# process; after a fork, the child starts over (`os.register_at_fork` below, plus a pid check
# on the enabled path for forks that bypass Python's hooks).

_UNRESOLVED: Any = object()
_tracer: Any = _UNRESOLVED
_provider: Any = None  # the TracerProvider we made, when on
_pid: int | None = None  # the process `_tracer` was resolved in
_lock = threading.Lock()
_warned = False
_test_exporter: Any = None  # see _set_exporter_for_tests


def _reset() -> None:
    global _tracer, _provider, _pid
    _tracer = _UNRESOLVED
    _provider = None
    _pid = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset)


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUTHY


def _requested() -> bool:
    """Whether the environment asks for telemetry (no imports)."""
    if not _truthy(os.environ.get("TELEMETRY_ENABLED")):
        return False
    return any(os.environ.get(var, "").strip() for var in _ENDPOINT_VARS)


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _make_provider() -> Any:
    """A TracerProvider exporting to OTLP/gRPC (or to the test exporter); None if impossible."""
    try:
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:
        _warn_once(
            "rrloader: TELEMETRY_ENABLED is set but OpenTelemetry is not installed "
            f"({exc}); tracing is off. Install opentelemetry-sdk and "
            "opentelemetry-exporter-otlp-proto-grpc to enable it."
        )
        return None
    if _test_exporter is not None:
        processor = SimpleSpanProcessor(_test_exporter)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            _warn_once(
                "rrloader: TELEMETRY_ENABLED is set but the OTLP/gRPC span exporter is not "
                f"installed ({exc}); tracing is off. Install opentelemetry-exporter-otlp-proto-grpc "
                "to enable it."
            )
            return None
        processor = BatchSpanProcessor(OTLPSpanExporter())  # endpoint etc. from OTEL_EXPORTER_OTLP_*
    service = os.environ.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(processor)
    _flush_at_process_exit(provider)
    return provider


def _flush_at_process_exit(provider: Any) -> None:
    # The provider flushes at interpreter exit (atexit). A multiprocessing child started by
    # fork leaves through os._exit, which skips atexit but runs multiprocessing's finalizers.
    with contextlib.suppress(Exception):
        from multiprocessing import util

        util.Finalize(None, provider.shutdown, exitpriority=10)


def _resolve() -> Any:
    """Decide whether tracing is on in this process; return the tracer or None."""
    global _tracer, _provider, _pid
    with _lock:
        pid = os.getpid()
        if _tracer is not _UNRESOLVED and _pid == pid:
            return _tracer
        tracer = None
        provider = None
        if _requested():
            provider = _make_provider()
            if provider is not None:
                tracer = provider.get_tracer(TRACER_NAME)
        _provider, _pid, _tracer = provider, pid, tracer
        return tracer


def _get_tracer() -> Any:
    tracer = _tracer
    if tracer is None:
        return None
    if tracer is _UNRESOLVED or _pid != os.getpid():
        return _resolve()
    return tracer


# --- public helpers ------------------------------------------------------------------------------


def enabled() -> bool:
    """True when spans are recorded and exported in this process."""
    tracer = _tracer
    if tracer is None:
        return False
    return _get_tracer() is not None


def tracing_scope(name: str, attributes: Mapping[str, AttributeValue] | None = None):
    """A context manager: a span named ``name`` around the ``with`` block, child of the current span.

    Yields the span (a no-op stand-in when tracing is off), so attributes found inside the
    block can be added with ``span.set_attribute(key, value)``. An exception leaving the
    block is recorded on the span, which is marked as an error.
    """
    if _tracer is None:
        return _NOOP_SCOPE
    tracer = _get_tracer()
    if tracer is None:
        return _NOOP_SCOPE
    return tracer.start_as_current_span(name, attributes=attributes)


def with_tracing(name: str) -> Callable[[F], F]:
    """A decorator: each call of the function runs in a span named ``name``.

    Return values and exceptions pass through unchanged (exceptions are also recorded on
    the span); ``functools.wraps`` keeps the name, docstring and signature. For a generator
    function the span covers the whole iteration — from the first item asked for until the
    generator finishes, fails or is closed — and is the current span only while the
    generator's own code runs.
    """

    def decorate(fn: F) -> F:
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _tracer is None:
                    return fn(*args, **kwargs)
                tracer = _get_tracer()
                if tracer is None:
                    return fn(*args, **kwargs)
                return _traced_generator(tracer, name, fn(*args, **kwargs))

            return generator_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _tracer is None:
                return fn(*args, **kwargs)
            tracer = _get_tracer()
            if tracer is None:
                return fn(*args, **kwargs)
            with tracer.start_as_current_span(name):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _traced_generator(tracer: Any, name: str, gen: Any) -> Iterator[Any]:
    """Drive ``gen`` with its span current while it runs, and not while the consumer does."""
    from opentelemetry import context, trace
    from opentelemetry.trace import Status, StatusCode

    span = None
    ctx = None
    to_send: Any = None
    to_throw: BaseException | None = None
    try:
        while True:
            if span is None:  # first item: the span's parent is the span current now
                span = tracer.start_span(name)
                ctx = trace.set_span_in_context(span)
            token = context.attach(ctx)
            try:
                item = gen.throw(to_throw) if to_throw is not None else gen.send(to_send)
            except StopIteration as stop:
                return stop.value
            finally:
                context.detach(token)
            to_send, to_throw = None, None
            try:
                to_send = yield item
            except GeneratorExit:
                token = context.attach(ctx)
                try:
                    gen.close()
                finally:
                    context.detach(token)
                raise
            except BaseException as exc:  # thrown in by the consumer: pass it on
                to_throw = exc
    except GeneratorExit:
        raise
    except BaseException as exc:
        if span is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if span is not None:
            span.end()
        else:
            gen.close()  # closed before the first item: nothing ran, no span


def record_span(name: str, start_ns: int, end_ns: int, attributes: Mapping[str, AttributeValue]) -> None:
    """Record a span that already happened, as a child of the current span.

    ``start_ns`` and ``end_ns`` are nanoseconds since the epoch (``time.time_ns()``'s clock);
    ``attributes`` maps names to int, float, str or bool. For stages timed elsewhere, e.g. the
    engine's per-block fetch and decode: ``record_span("rrloader.fetch", t0, t1,
    {"rrloader.fetch.rows": n})``.
    """
    if _tracer is None:
        return
    tracer = _get_tracer()
    if tracer is None:
        return
    span = tracer.start_span(name, start_time=int(start_ns), attributes=attributes)
    span.end(end_time=int(end_ns))


def current_carrier() -> dict[str, str]:
    """The current span as a W3C trace-context carrier (``{"traceparent": ...}``).

    Empty when tracing is off or no span is open. Picklable; pass it to another process and
    ``attach_carrier`` it there.
    """
    if _tracer is None or _get_tracer() is None:
        return {}
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def attach_carrier(carrier: Mapping[str, str] | None) -> Any:
    """Make the span described by ``carrier`` (from ``current_carrier``) the current parent.

    Spans started afterwards in this thread (and in contexts copied from it) become its
    children. Returns a token for ``detach_carrier``, or None when nothing was attached
    (tracing off, or an empty carrier).
    """
    if not carrier or _tracer is None or _get_tracer() is None:
        return None
    from opentelemetry import context, propagate

    return context.attach(propagate.extract(dict(carrier)))


def detach_carrier(token: Any) -> None:
    """Undo ``attach_carrier`` (a None token is ignored)."""
    if token is None:
        return
    from opentelemetry import context

    context.detach(token)


def bind_context(fn: F) -> F:
    """``fn`` bound to the caller's current span, to run in another thread (an executor, a
    prefetch thread): spans it opens become children of the caller's span. Returns ``fn``
    itself when tracing is off.
    """
    if _tracer is None or _get_tracer() is None:
        return fn
    from opentelemetry import context

    ctx = context.get_current()

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> Any:
        token = context.attach(ctx)
        try:
            return fn(*args, **kwargs)
        finally:
            context.detach(token)

    return bound  # type: ignore[return-value]


# --- tests ---------------------------------------------------------------------------------------


def _set_exporter_for_tests(exporter: Any) -> None:
    """Tests only: export to ``exporter`` through a SimpleSpanProcessor instead of OTLP/gRPC.

    The environment switches still apply (set ``TELEMETRY_ENABLED`` and an endpoint). The
    configuration is re-read on the next use of a helper; ``None`` restores the default.
    """
    global _test_exporter
    _test_exporter = exporter
    _reset_for_tests()


def _reset_for_tests() -> None:
    """Tests only: forget the resolved configuration (re-read the environment on next use)."""
    global _warned
    with _lock:
        provider = _provider
        _reset()
        _warned = False
    if provider is not None:
        with contextlib.suppress(Exception):
            provider.shutdown()
