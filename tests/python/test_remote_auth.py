"""Auth (issue 12, item 6): a catalog that requires a token.

rerun-sdk's ``rr.server.Server`` takes no auth options, so the catalog here is an ``AuthProxy``:
a real gRPC server (grpcio, on 127.0.0.1) in front of ``rr.server.Server`` that forwards every
call it accepts and answers UNAUTHENTICATED to any call without the header rerun-sdk's own
client sends, ``authorization: Bearer <token>`` (re_auth's ``AuthDecorator``). It logs every
call: its method, its client (rrloader's transport is grpcio, rerun-sdk's is tonic), whether
it carried the token, and whether it was refused.

The tokens are JWTs whose ``allowed_hosts`` claim names 127.0.0.1: rerun-sdk sends a token
only to the hosts it names (default ``.cloud.rerun.io``), and so does rrloader.
"""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import sys
import threading
import time
import warnings
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import rrloader.dataloader as dl
import rrloader.experimental.dataloader as rrl
from rrloader import LocalDataset, RemoteDataset
from rrloader._remote import _host_matches, _token_allowed_for_host
from rrloader.errors import InvalidArgumentError, RrloaderIOError
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dlutil  # noqa: E402


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def make_jwt(subject: str, allowed_hosts: list[str] | None = ("127.0.0.1",)) -> str:
    """A JWT of rerun's shape (the proxy checks it byte for byte, not its signature)."""
    claims: dict = {"sub": subject, "aud": "redap", "exp": 4102444800}
    if allowed_hosts is not None:
        claims["allowed_hosts"] = list(allowed_hosts)
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}.{_b64({'sig': subject})}"


GOOD = make_jwt("good")
OTHER = make_jwt("other")
RRLOADER_METHODS = ("GetRrdManifest", "FetchChunks")  # the calls rrloader's engine makes itself


# ------------------------------------------------------------------------------------------------ the proxy
@dataclass
class Call:
    method: str  # the method's name, without the service
    client: str  # "rrloader" (grpcio) or "rerun" (rerun-sdk's tonic client)
    token: str | None  # the bearer token it carried
    refused: bool
    request: str  # the request's digest (refused calls only)


class AuthProxy(grpc.GenericRpcHandler):
    """A gRPC server on 127.0.0.1 that forwards every call to ``upstream`` (host:port) when it
    carries ``authorization: Bearer <required>`` and answers UNAUTHENTICATED otherwise
    (``required=None``: no token needed). Any method, either direction streaming: every call
    is forwarded as a bidirectional stream of raw messages. ``echo``: a refusal quotes the
    header it got (a careless server)."""

    def __init__(self, upstream: str, required: str | None):
        self.required = required
        self.echo = False
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self._upstream = grpc.insecure_channel(upstream, options=options)
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=32), handlers=[self], options=options
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"rerun+http://127.0.0.1:{self.port}"
        self._server.start()

    def close(self) -> None:
        self._server.stop(0)
        self._upstream.close()

    def reset(self, required: str | None = GOOD) -> None:
        with self._lock:
            self.required = required
            self.echo = False
            self.calls.clear()

    def log(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def service(self, details):
        method = details.method
        metadata = list(details.invocation_metadata)
        headers = [v for k, v in metadata if k == "authorization"]
        agent = next((v for k, v in metadata if k == "user-agent"), "")
        bearer = (
            headers[0][len("Bearer ") :] if len(headers) == 1 and headers[0].startswith("Bearer ") else None
        )
        forward = [(k, v) for k, v in metadata if k not in ("authorization", "user-agent")]
        client = "rrloader" if agent.startswith("grpc-python") else "rerun"

        def handle(requests, context):
            name = method.rsplit("/", 1)[-1]
            if self.required is not None and bearer != self.required:
                first = next(requests, b"")
                with self._lock:
                    digest = hashlib.sha1(method.encode() + first).hexdigest()
                    self.calls.append(Call(name, client, bearer, True, digest))
                    echo = self.echo
                said = f" (got {headers[0]})" if echo and headers else ""
                context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing or wrong bearer token{said}")
            with self._lock:
                self.calls.append(Call(name, client, bearer, False, ""))
            remaining = context.time_remaining()
            timeout = remaining if remaining is not None and remaining < 1e5 else None
            upstream = self._upstream.stream_stream(
                method, request_serializer=None, response_deserializer=None
            )
            try:
                yield from upstream(requests, metadata=forward, timeout=timeout)
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")

        return grpc.stream_stream_rpc_method_handler(
            handle, request_deserializer=None, response_serializer=None
        )


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("auth") / "num"
    root.mkdir()
    dlutil.write_numeric_dataset(root)
    return root


@pytest.fixture(scope="module")
def catalog(data_root):
    import rerun as rr

    server = rr.server.Server(host="127.0.0.1", datasets={"num": str(data_root)})
    proxy = AuthProxy(server.url().split("://", 1)[1], GOOD)
    yield proxy
    proxy.close()
    server.shutdown()


@pytest.fixture
def proxy(catalog, monkeypatch):
    """The catalog, requiring GOOD, with an empty log; no token in the environment."""
    monkeypatch.delenv("REDAP_TOKEN", raising=False)
    monkeypatch.delenv("RERUN_INSECURE_SKIP_HOST_CHECK", raising=False)
    catalog.reset(GOOD)
    yield catalog
    catalog.reset(GOOD)


def seed_fields() -> dict[str, dl.Field]:
    c = dlutil.NUM_COLUMNS
    return {
        "state": dl.Field(c["state"], decode=dl.NumericDecoder(), window=(-1, 0)),
        "i32": dl.Field(c["i32"], decode=dl.NumericDecoder()),
    }


def fields041() -> dict[str, rrl.Field]:
    c = dlutil.NUM_COLUMNS
    return {
        "state": rrl.Field(c["state"], decode=rrl.NumericDecoder()),
        "i32": rrl.Field(c["i32"], decode=rrl.NumericDecoder()),
    }


def values(samples) -> list[tuple]:
    """The samples' values, sorted (workers interleave their shards)."""
    out = []
    for s in samples:
        out.append(
            tuple((k, None if v is None else tuple(v.flatten().tolist())) for k, v in sorted(s.items()))
        )
    return sorted(out, key=repr)


def embedded_seed(data_root: Path) -> list[tuple]:
    ds = dl.RerunIterableDataset(
        dl.DataSource(LocalDataset(str(data_root))), "frame", seed_fields(), fetch_size=2
    )
    return values(ds)


def rrloader_calls(log: list[Call]) -> list[Call]:
    return [c for c in log if c.client == "rrloader"]


def assert_all_carried(log: list[Call], token: str = GOOD) -> list[Call]:
    """Every call made — by rrloader and by rerun-sdk — carried ``token`` and none was refused;
    rrloader made both kinds of its calls. Returns rrloader's calls."""
    assert log, "no call reached the catalog"
    assert all(c.token == token and not c.refused for c in log), [
        (c.method, c.client, c.refused) for c in log
    ]
    ours = rrloader_calls(log)
    assert {c.method for c in ours} == set(RRLOADER_METHODS), [c.method for c in ours]
    return ours


# ------------------------------------------------------------------------------------------------ the header
def test_the_header_is_the_one_rerun_sdk_sends(proxy):
    """rerun-sdk's own client, given the token, sends ``authorization: Bearer <token>`` (the
    proxy's check), so a token that opens the catalog to rerun-sdk opens it to rrloader."""
    import rerun as rr

    client = rr.catalog.CatalogClient(proxy.url, token=GOOD)
    assert "num" in [d.name for d in client.datasets()]
    log = proxy.log()
    assert log and all(c.client == "rerun" and c.token == GOOD and not c.refused for c in log)


# ------------------------------------------------------------------------------------------------ where it comes from
def test_token_argument_is_sent_on_every_call(proxy, data_root):
    remote = RemoteDataset(proxy.url, "num", token=GOOD)
    ds = dl.RerunIterableDataset(dl.DataSource(remote), "frame", seed_fields(), fetch_size=2)
    assert values(ds) == embedded_seed(data_root)
    ours = assert_all_carried(proxy.log())
    stats = remote.cache_stats()
    # Counted at the proxy: every call rrloader's engine made, as many as it counts itself.
    assert len(ours) == stats["fetches"] + stats["manifest_fetches"] > 0, (len(ours), stats)
    assert sum(c.method == "FetchChunks" for c in ours) == stats["fetches"]


def test_token_from_redap_token(proxy, data_root, monkeypatch):
    monkeypatch.setenv("REDAP_TOKEN", GOOD)
    remote = RemoteDataset(proxy.url, "num")
    ds = dl.RerunIterableDataset(dl.DataSource(remote), "frame", seed_fields(), fetch_size=2)
    assert values(ds) == embedded_seed(data_root)
    assert_all_carried(proxy.log())


def test_token_from_the_rerun_dataset_entry(proxy, data_root, monkeypatch):
    """The 0.41 front end over a rerun-sdk DatasetEntry (and a DatasetSelection of one): the
    token of the CatalogClient it came from — which wins over REDAP_TOKEN, as in rerun-sdk."""
    import rerun as rr

    monkeypatch.setenv("REDAP_TOKEN", OTHER)
    entry = rr.catalog.CatalogClient(proxy.url, token=GOOD).get_dataset("num")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fork warning of a remote dataset
        ds = rrl.RerunMapDataset(rrl.DataSource(entry), "frame", fields041())
        local = rrl.RerunMapDataset(rrl.DataSource(LocalDataset(str(data_root))), "frame", fields041())
        assert len(ds) == len(local)
        ids = list(range(len(ds)))
        assert values(ds.__getitems__(ids)) == values(local.__getitems__(ids))
        assert_all_carried(proxy.log())

        proxy.reset(GOOD)
        selection = entry.filter_segments(["seg_b"])
        part = rrl.RerunIterableDataset(rrl.DataSource(selection), "frame", fields041())
        local_part = rrl.RerunIterableDataset(
            rrl.DataSource(LocalDataset(str(data_root)), segments=["seg_b"]), "frame", fields041()
        )
        got = list(part)
        assert got and values(got) == values(local_part)
    assert all(c.token == GOOD and not c.refused for c in proxy.log())
    assert rrloader_calls(proxy.log())


def test_token_argument_wins_over_redap_token(proxy, monkeypatch):
    monkeypatch.setenv("REDAP_TOKEN", OTHER)
    remote = RemoteDataset(proxy.url, "num", token=GOOD)
    assert remote._core.load_entity("seg_a", "/state") > 0
    assert_all_carried(proxy.log())


# ------------------------------------------------------------------------------------------------ processes
def test_spawned_workers_and_pickles_carry_the_token(proxy, data_root):
    """No REDAP_TOKEN anywhere: the workers have the token only because it pickles with the
    dataset — the argument's (seed front end) and the entry client's (0.41 front end)."""
    import rerun as rr

    remote = RemoteDataset(proxy.url, "num", token=GOOD)
    again = pickle.loads(pickle.dumps(remote))  # a fresh connection of its own
    assert again._state._entry is None and again._core.load_entity("seg_c", "/state") > 0

    ds = dl.RerunIterableDataset(dl.DataSource(remote), "frame", seed_fields(), fetch_size=2)
    got = list(DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context="spawn"))
    assert values(got) == embedded_seed(data_root)

    entry = rr.catalog.CatalogClient(proxy.url, token=GOOD).get_dataset("num")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fork warning of a remote dataset
        ds041 = rrl.RerunMapDataset(rrl.DataSource(entry), "frame", fields041())
        local = rrl.RerunMapDataset(rrl.DataSource(LocalDataset(str(data_root))), "frame", fields041())
    got041 = list(DataLoader(ds041, batch_size=None, num_workers=2, multiprocessing_context="spawn"))
    assert values(got041) == values(local.__getitems__(list(range(len(local)))))
    assert_all_carried(proxy.log())


def test_a_reconnected_reader_carries_the_token(proxy):
    """``reader()`` (Python decoders with ``context_range``) in a process without the parent's
    entry opens rerun-sdk's client itself: with the token, REDAP_TOKEN unset."""
    remote = pickle.loads(pickle.dumps(RemoteDataset(proxy.url, "num", token=GOOD)))
    assert remote._state._entry is None
    proxy.reset(GOOD)
    table = remote.reader("frame", segments=["seg_a"])
    assert table.num_rows == len(dlutil.NUM_FRAMES["seg_a"])
    log = proxy.log()
    assert log and all(c.client == "rerun" and c.token == GOOD and not c.refused for c in log)


# ------------------------------------------------------------------------------------------------ refusals
def refused(log: list[Call]) -> list[Call]:
    return [c for c in log if c.refused]


def test_missing_token_is_a_clear_error_naming_the_url(proxy):
    t0 = time.monotonic()
    with pytest.raises(RrloaderIOError) as e:
        RemoteDataset(proxy.url, "num", remote_timeout_s=30)
    assert time.monotonic() - t0 < 5.0  # refused credentials are not retried
    message = str(e.value)
    assert proxy.url in message and "no token was sent" in message and "REDAP_TOKEN" in message
    assert "is the server running" not in message

    # A catalog that starts requiring a token after the epoch was planned: rrloader's own calls.
    proxy.reset(required=None)
    remote = RemoteDataset(proxy.url, "num", cache_bytes=0)
    ds = dl.RerunIterableDataset(dl.DataSource(remote), "frame", seed_fields(), fetch_size=16)
    proxy.reset(GOOD)
    with pytest.raises(RrloaderIOError) as e:
        list(ds)
    message = str(e.value)
    assert proxy.url in message and "no token was sent" in message, message
    ours = refused(proxy.log())
    assert ours and all(c.client == "rrloader" and c.token is None for c in ours)
    assert len({c.request for c in ours}) == len(ours), "a refused request was asked again"


def test_wrong_token_is_a_clear_error_not_retried(proxy):
    t0 = time.monotonic()
    with pytest.raises(RrloaderIOError) as e:
        RemoteDataset(proxy.url, "num", token=OTHER, remote_timeout_s=30)
    assert time.monotonic() - t0 < 5.0
    message = str(e.value)
    assert proxy.url in message and "rejected the token (from the token= argument)" in message, message
    assert OTHER not in message

    # The token is revoked mid-run: the first refused call ends the epoch, nothing is re-asked
    # (remote_retries=4 would retry a transient failure four times, with backoff).
    remote = RemoteDataset(proxy.url, "num", token=GOOD, cache_bytes=0, remote_timeout_s=30)
    ds = dl.RerunIterableDataset(dl.DataSource(remote), "frame", seed_fields(), fetch_size=16)
    proxy.reset(OTHER)
    t0 = time.monotonic()
    with pytest.raises(RrloaderIOError) as e:
        list(ds)
    elapsed = time.monotonic() - t0
    message = str(e.value)
    assert proxy.url in message and "rejected the token (from the token= argument)" in message, message
    assert GOOD not in message and "UNAUTHENTICATED" in message
    ours = refused(proxy.log())
    assert ours and all(c.client == "rrloader" and c.token == GOOD for c in ours)
    assert len({c.request for c in ours}) == len(ours), "a refused request was asked again"
    assert elapsed < 5.0, elapsed


def test_the_token_is_never_printed(proxy):
    remote = RemoteDataset(proxy.url, "num", token=GOOD, cache_bytes=0)
    ds = dl.RerunIterableDataset(dl.DataSource(remote), "frame", seed_fields(), fetch_size=1, shuffle=False)
    for text in (
        repr(remote),
        str(remote),
        repr(dl.DataSource(remote)),
        repr(remote.filter_segments(["seg_a"])),
    ):
        assert GOOD not in text
    # A careless server quotes the header it refused: the message does not.
    proxy.reset(OTHER)
    proxy.echo = True
    with pytest.raises(RrloaderIOError) as e:
        list(ds)
    assert GOOD not in str(e.value) and "<token>" in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------------ tokens
def test_malformed_tokens(proxy, monkeypatch):
    for bad in ("not-a-jwt", "", "   ", "a.b.c"):
        with pytest.raises(InvalidArgumentError) as e:
            RemoteDataset(proxy.url, "num", token=bad)
        assert not bad.strip() or bad not in str(e.value)
    with pytest.raises(InvalidArgumentError):
        RemoteDataset(proxy.url, "num", token=b"bytes")
    # A malformed REDAP_TOKEN is ignored, as rerun-sdk ignores it (with a warning).
    monkeypatch.setenv("REDAP_TOKEN", "not-a-jwt")
    with (
        pytest.warns(UserWarning, match="REDAP_TOKEN"),
        pytest.raises(RrloaderIOError, match="no token was sent"),
    ):
        RemoteDataset(proxy.url, "num")


def test_a_token_goes_only_to_the_hosts_it_names(proxy, monkeypatch):
    """rerun-sdk's rule (re_auth's ``Jwt::for_host``), which rrloader keeps: a token without an
    ``allowed_hosts`` claim is for ``*.cloud.rerun.io`` only, and is not sent to 127.0.0.1."""
    cloud = make_jwt("cloud", allowed_hosts=None)
    with pytest.raises(RrloaderIOError) as e:
        RemoteDataset(proxy.url, "num", token=cloud)
    message = str(e.value)
    assert (
        "was not sent" in message
        and "allowed_hosts" in message
        and "RERUN_INSECURE_SKIP_HOST_CHECK" in message
    )
    assert proxy.url in message and cloud not in message
    assert all(c.token is None for c in proxy.log())  # neither client sent it

    monkeypatch.setenv("RERUN_INSECURE_SKIP_HOST_CHECK", "1")
    proxy.reset(cloud)
    remote = RemoteDataset(proxy.url, "num", token=cloud)
    assert remote._core.load_entity("seg_a", "/state") > 0
    assert_all_carried(proxy.log(), token=cloud)


def test_host_patterns():
    assert _host_matches(".cloud.rerun.io", "api.acme.cloud.rerun.io")
    assert _host_matches(".cloud.rerun.io", "API.Acme.Cloud.Rerun.IO")
    assert not _host_matches(".cloud.rerun.io", "cloud.rerun.io")
    assert not _host_matches(".cloud.rerun.io", "mycloud.rerun.io")
    assert not _host_matches(".cloud.rerun.io", "localhost")
    assert _host_matches("127.0.0.1", "127.0.0.1") and not _host_matches("127.0.0.1", "127.0.0.2")
    assert _host_matches("[::1]", "::1") and _host_matches("::1", "[0:0::1]")
    assert _token_allowed_for_host(make_jwt("x", ["a.example", "127.0.0.1"]), "127.0.0.1")
    assert not _token_allowed_for_host(make_jwt("x", None), "127.0.0.1")
    assert _token_allowed_for_host(make_jwt("x", None), "api.x.cloud.rerun.io")
    single = f"{_b64({'alg': 'HS256'})}.{_b64({'allowed_hosts': 'h.example'})}.c2ln"
    assert _token_allowed_for_host(single, "h.example") and not _token_allowed_for_host(single, "g.example")
    assert _token_allowed_for_host(
        f"{_b64({'alg': 'HS256'})}.%%%.c2ln", "anywhere"
    )  # unparsable: unrestricted
