"""rrloader.tracing: opt-in OpenTelemetry spans (spec §7), exported here to an in-memory exporter."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from rrloader import tracing

PYTHON_DIR = str(Path(tracing.__file__).resolve().parents[1])
ENV_VARS = (
    "TELEMETRY_ENABLED",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    tracing._set_exporter_for_tests(None)
    yield
    tracing._set_exporter_for_tests(None)


@pytest.fixture
def exporter(monkeypatch):
    """Telemetry on (flag + endpoint), spans going to an InMemorySpanExporter."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("TELEMETRY_ENABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://localhost:4317")
    exp = InMemorySpanExporter()
    tracing._set_exporter_for_tests(exp)
    assert tracing.enabled()
    return exp


def _by_name(spans):
    out = {}
    for s in spans:
        assert s.name not in out, f"duplicate span {s.name}"
        out[s.name] = s
    return out


def _run_python(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    full_env["PYTHONPATH"] = PYTHON_DIR + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- switched off ---------------------------------------------------------------------------------

NOOP_SCRIPT = """
    import sys, time
    from rrloader import tracing

    @tracing.with_tracing("f")
    def f(x):
        return x + 1

    @tracing.with_tracing("g")
    def g():
        yield 1
        yield 2

    with tracing.tracing_scope("scope") as span:
        span.set_attribute("a", 1)
        assert f(1) == 2
        assert list(g()) == [1, 2]
        tracing.record_span("r", time.time_ns(), time.time_ns(), {"n": 1})
        assert tracing.current_carrier() == {}
        assert tracing.attach_carrier({"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) is None
        assert tracing.bind_context(f) is f
    assert not tracing.enabled()
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    assert not loaded, loaded
    print("ok")
"""


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"TELEMETRY_ENABLED": "true"},  # no endpoint
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"},  # flag unset
        {"TELEMETRY_ENABLED": "0", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://localhost:4317"},
        {"TELEMETRY_ENABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"},
        {"TELEMETRY_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
    ],
    ids=["nothing", "no-endpoint", "no-flag", "flag-0", "flag-false", "blank-endpoint"],
)
def test_off_is_a_noop_that_imports_nothing(env):
    proc = _run_python(NOOP_SCRIPT, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert proc.stderr == ""


@pytest.mark.parametrize("flag", ["1", "true", "TRUE", "Yes", "on", " on "])
@pytest.mark.parametrize("var", ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"])
def test_truthy_flags_and_either_endpoint_turn_it_on(monkeypatch, flag, var):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("TELEMETRY_ENABLED", flag)
    monkeypatch.setenv(var, "http://collector:4317")
    exp = InMemorySpanExporter()
    tracing._set_exporter_for_tests(exp)
    assert tracing.enabled()
    with tracing.tracing_scope("s"):
        pass
    assert [s.name for s in exp.get_finished_spans()] == ["s"]


def test_off_in_process_records_nothing_even_with_an_exporter(monkeypatch):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exp = InMemorySpanExporter()
    monkeypatch.setenv("TELEMETRY_ENABLED", "true")  # but no endpoint
    tracing._set_exporter_for_tests(exp)
    assert not tracing.enabled()
    with tracing.tracing_scope("s") as span:
        assert span is tracing.NOOP_SPAN
        tracing.record_span("r", 1, 2, {})
    assert exp.get_finished_spans() == ()


def test_missing_otlp_exporter_warns_once_and_stays_off():
    # opentelemetry-exporter-otlp-proto-grpc is not a dependency; if it is installed the
    # subprocess hides it.
    code = """
        import sys, warnings
        sys.modules["opentelemetry.exporter.otlp.proto.grpc.trace_exporter"] = None  # -> ImportError
        from rrloader import tracing
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with tracing.tracing_scope("a"):
                pass
            tracing.record_span("b", 1, 2, {})
            assert not tracing.enabled()
        msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(msgs) == 1, msgs
        assert "opentelemetry-exporter-otlp-proto-grpc" in msgs[0], msgs[0]
        print("ok")
    """
    proc = _run_python(
        code, {"TELEMETRY_ENABLED": "yes", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_otlp_exporter_is_used_with_a_batch_processor(monkeypatch):
    """When the gRPC exporter is importable, it is built (endpoint from the env) behind a batch processor."""
    import types

    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    exported = []

    class FakeOTLPSpanExporter(SpanExporter):
        def export(self, spans):
            exported.extend(spans)
            return SpanExportResult.SUCCESS

    module = types.ModuleType("opentelemetry.exporter.otlp.proto.grpc.trace_exporter")
    module.OTLPSpanExporter = FakeOTLPSpanExporter
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setenv("TELEMETRY_ENABLED", "on")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-trainer")
    tracing._reset_for_tests()
    assert tracing.enabled()
    processors = tracing._provider._active_span_processor._span_processors
    assert [type(p) for p in processors] == [BatchSpanProcessor]
    with tracing.tracing_scope("batched"):
        pass
    tracing._provider.force_flush()
    assert [s.name for s in exported] == ["batched"]
    assert exported[0].resource.attributes["service.name"] == "my-trainer"


def test_default_service_name(exporter):
    with tracing.tracing_scope("s"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "rrloader"


# --- spans ----------------------------------------------------------------------------------------


def test_scope_nesting_and_attributes(exporter):
    with tracing.tracing_scope("outer", attributes={"rrloader.k": 3}) as outer:
        outer.set_attribute("rrloader.late", "x")
        with tracing.tracing_scope("inner"):
            pass
    spans = _by_name(exporter.get_finished_spans())
    assert set(spans) == {"outer", "inner"}
    assert spans["outer"].parent is None
    assert spans["inner"].parent.span_id == spans["outer"].context.span_id
    assert spans["inner"].context.trace_id == spans["outer"].context.trace_id
    assert dict(spans["outer"].attributes) == {"rrloader.k": 3, "rrloader.late": "x"}
    assert spans["outer"].start_time <= spans["inner"].start_time <= spans["inner"].end_time
    assert spans["inner"].end_time <= spans["outer"].end_time


def test_scope_records_exceptions(exporter):
    from opentelemetry.trace import StatusCode

    with pytest.raises(KeyError), tracing.tracing_scope("failing"):
        raise KeyError("boom")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_record_span_explicit_times_attributes_and_parent(exporter):
    t0 = time.time_ns()
    t1 = t0 + 1_234_567
    attrs = {
        "rrloader.fetch.rows": 128,
        "rrloader.fetch.bytes": 4096.5,
        "rrloader.fetch.index": "frame",
        "ok": True,
    }
    with tracing.tracing_scope("block"):
        tracing.record_span("rrloader.fetch", t0, t1, attrs)
    tracing.record_span("orphan", t0, t1, {})
    spans = _by_name(exporter.get_finished_spans())
    fetch = spans["rrloader.fetch"]
    assert (fetch.start_time, fetch.end_time) == (t0, t1)
    assert dict(fetch.attributes) == attrs
    assert fetch.parent.span_id == spans["block"].context.span_id
    assert spans["orphan"].parent is None


def test_with_tracing_function(exporter):
    @tracing.with_tracing("my.span")
    def add(a, b=1):
        """Adds."""
        with tracing.tracing_scope("child"):
            return a + b

    @tracing.with_tracing("my.failing")
    def fail():
        raise ValueError("nope")

    assert add(2, b=3) == 5
    assert add.__name__ == "add" and add.__doc__ == "Adds."
    assert add.__wrapped__ is not None
    with pytest.raises(ValueError, match="nope"):
        fail()
    spans = _by_name(exporter.get_finished_spans())
    assert spans["child"].parent.span_id == spans["my.span"].context.span_id
    assert spans["my.failing"].status.status_code.name == "ERROR"


def test_with_tracing_when_off_keeps_behaviour_and_metadata():
    def original(x, *, y=2):
        """Doc."""
        return x * y

    wrapped = tracing.with_tracing("x")(original)
    assert wrapped(3, y=4) == 12
    assert wrapped.__name__ == "original" and wrapped.__doc__ == "Doc."
    assert wrapped.__wrapped__ is original
    assert not tracing.enabled()


def test_with_tracing_generator_span_excludes_consumer_time(exporter):
    @tracing.with_tracing("gen")
    def gen(n):
        for i in range(n):
            with tracing.tracing_scope(f"produce {i}"):
                pass
            yield i
        return "done"

    with tracing.tracing_scope("consumer"):
        out = []
        for item in gen(2):
            with tracing.tracing_scope(f"consume {item}"):
                out.append(item)
    assert out == [0, 1]
    spans = _by_name(exporter.get_finished_spans())
    assert spans["gen"].parent.span_id == spans["consumer"].context.span_id
    for i in range(2):
        assert spans[f"produce {i}"].parent.span_id == spans["gen"].context.span_id
        # the consumer's work between items is not inside the generator's span
        assert spans[f"consume {i}"].parent.span_id == spans["consumer"].context.span_id
    assert spans["gen"].start_time <= spans["produce 0"].start_time
    assert spans["gen"].end_time >= spans["produce 1"].end_time


def test_with_tracing_generator_return_send_throw_close(exporter):
    @tracing.with_tracing("echo")
    def echo():
        received = []
        try:
            while True:
                try:
                    value = yield len(received)
                except KeyError:
                    value = "caught"
                if value is None:
                    return received
                received.append(value)
        finally:
            with tracing.tracing_scope("cleanup"):
                pass

    g = echo()
    assert next(g) == 0
    assert g.send("a") == 1
    assert g.throw(KeyError("k")) == 2
    with pytest.raises(StopIteration) as stop:
        g.send(None)
    assert stop.value.value == ["a", "caught"]

    g2 = echo()
    next(g2)
    g2.close()  # GeneratorExit reaches the body, cleanup runs under the span, no error status

    @tracing.with_tracing("bad")
    def bad():
        yield 1
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        list(bad())

    never = echo()
    never.close()  # never started: no span

    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("echo") == 2 and names.count("cleanup") == 2 and names.count("bad") == 1
    echo_ids = {s.context.span_id for s in spans if s.name == "echo"}
    assert all(s.parent.span_id in echo_ids for s in spans if s.name == "cleanup")
    status = {s.name: s.status.status_code.name for s in spans}
    assert status["bad"] == "ERROR" and status["echo"] != "ERROR"


def test_with_tracing_generator_off_returns_the_generator_itself():
    def gen():
        yield 1

    wrapped = tracing.with_tracing("g")(gen)
    it = wrapped()
    assert type(it).__name__ == "generator" and it.gi_code is gen.__code__
    assert list(it) == [1]


def test_bind_context_parents_spans_in_other_threads(exporter):
    from concurrent.futures import ThreadPoolExecutor

    def work():
        with tracing.tracing_scope("in thread"):
            pass

    with tracing.tracing_scope("submitter"), ThreadPoolExecutor(1) as pool:
        pool.submit(tracing.bind_context(work)).result()
        pool.submit(work).result()  # unbound: a root span
    spans = exporter.get_finished_spans()
    submitter = next(s for s in spans if s.name == "submitter")
    parents = sorted((s.parent.span_id if s.parent else 0) for s in spans if s.name == "in thread")
    assert parents == sorted([0, submitter.context.span_id])


# --- across processes -----------------------------------------------------------------------------


def test_carrier_round_trip_in_process(exporter):
    assert tracing.current_carrier() == {}  # no open span
    with tracing.tracing_scope("parent"):
        carrier = tracing.current_carrier()
    assert set(carrier) >= {"traceparent"}
    pickle.loads(pickle.dumps(carrier))
    token = tracing.attach_carrier(carrier)
    try:
        with tracing.tracing_scope("remote child"):
            pass
    finally:
        tracing.detach_carrier(token)
    with tracing.tracing_scope("after detach"):
        pass
    spans = _by_name(exporter.get_finished_spans())
    assert spans["remote child"].parent.span_id == spans["parent"].context.span_id
    assert spans["remote child"].context.trace_id == spans["parent"].context.trace_id
    assert spans["after detach"].parent is None
    assert tracing.attach_carrier({}) is None
    tracing.detach_carrier(None)


CHILD_SCRIPT = """
    import json, sys
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from rrloader import tracing

    exp = InMemorySpanExporter()
    tracing._set_exporter_for_tests(exp)
    token = tracing.attach_carrier(json.loads(sys.argv[1]))
    with tracing.tracing_scope("worker"):
        tracing.record_span("rrloader.decode", 10, 20, {"rrloader.decode.samples": 4})
    tracing.detach_carrier(token)
    print(json.dumps([
        {"name": s.name, "trace": s.context.trace_id, "span": s.context.span_id,
         "parent": s.parent.span_id if s.parent else None}
        for s in exp.get_finished_spans()
    ]))
"""


def test_carrier_parents_spans_in_a_spawned_process(exporter):
    """What a DataLoader worker does: the carrier travels pickled, the worker attaches it."""
    import json

    with tracing.tracing_scope("epoch"):
        carrier = pickle.loads(pickle.dumps(tracing.current_carrier()))
    (epoch,) = exporter.get_finished_spans()
    env = {"TELEMETRY_ENABLED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4317"}
    proc = _run_python(CHILD_SCRIPT, env, json.dumps(carrier))
    assert proc.returncode == 0, proc.stderr
    spans = {s["name"]: s for s in json.loads(proc.stdout)}
    assert spans["worker"]["parent"] == epoch.context.span_id
    assert spans["worker"]["trace"] == epoch.context.trace_id
    assert spans["rrloader.decode"]["parent"] == spans["worker"]["span"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_reinitialised_after_fork(exporter):
    """A forked child resolves the configuration again and gets its own provider."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        parent_provider = tracing._provider
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            ok = 0
            try:
                fresh = tracing._tracer is tracing._UNRESOLVED and tracing._provider is None
                on = tracing.enabled()
                ok = int(
                    fresh and on and tracing._provider is not parent_provider and tracing._pid == os.getpid()
                )
            finally:
                os.write(w, str(ok).encode())
                os._exit(0)
        os.close(w)
        result = os.read(r, 16)
        os.close(r)
        os.waitpid(pid, 0)
    assert result == b"1"
    assert tracing._provider is parent_provider


def test_noop_cost_is_negligible():
    """The off path is a cached check: a scope costs well under a microsecond-scale budget."""
    assert not tracing.enabled()
    n = 100_000
    start = time.perf_counter()
    for _ in range(n):
        with tracing.tracing_scope("x"):
            pass
        tracing.record_span("y", 0, 1, {})
    per_iter = (time.perf_counter() - start) / n
    assert per_iter < 5e-6, per_iter
