"""The reference side of the 0.41 differential test: rerun-sdk 0.41's dataloader over
``rr.server.Server(host="127.0.0.1", datasets=...)``, in a child process.

A Rust panic in rerun-sdk (its query engine, its server) aborts the whole process; in a child
it only ends the child, and ``RefProcess`` reports it (``RefCrash``, with the panic message
from the child's stderr log) and starts a new one for the next call.

Importing this module installs the torchvision stand-in (``rerun041``) before rerun's image
decoder is imported; so does unpickling ``RefSwitch`` in a spawned DataLoader worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import diff041util as u
import rerun041  # noqa: F401  (the torchvision stand-in, then rerun.experimental.dataloader)
from rerun041 import ref


class RefSwitch(u.Switch):
    """``diff041util.Switch`` whose unpickling imports this module (and so the stand-in) first."""


class RefCrash(RuntimeError):
    """The reference process died (a panic) or timed out."""


def _child_main(conn: Any, log_path: str) -> None:  # pragma: no cover - runs in the child
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.environ.setdefault("RUST_LOG", "warn")
    import rerun as rr

    server = None
    sources: dict[str, Any] = {}
    runner: u.WorkerRunner | None = None
    lengths: dict[Any, int] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        try:
            if msg[0] == "load":
                _, folders = msg
                server = rr.server.Server(host="127.0.0.1", datasets={k: str(v) for k, v in folders.items()})
                client = server.client()
                sources = {k: ref.DataSource(client.get_dataset(k)) for k in folders}
                conn.send(("ok", None))
            elif msg[0] == "workers":
                _, keyed = msg  # {key: (dataset name, case, config)}
                datasets = {}
                for key, (name, case, config) in keyed.items():
                    datasets[key] = u.make_dataset(ref, sources[name], case, "reference", config)
                    lengths[key] = len(datasets[key])
                if runner is not None:
                    runner.close()
                runner = u.WorkerRunner(datasets, switch_type=RefSwitch)
                conn.send(("ok", None))
            elif msg[0] == "run":
                _, name, case, configs, *rest = msg
                side = rest[0] if rest else "reference"
                out = []
                for config in configs:
                    if config.workers:
                        key = (case.number, config.strategy)
                        out.append(runner.run(key, config.epoch, lengths[key]))
                    else:
                        out.append(u.run(ref, sources[name], case, side, config))
                conn.send(("ok", out))
            else:
                conn.send(("err", f"unknown message {msg[0]!r}"))
        except Exception as e:  # noqa: BLE001 - reported to the parent
            conn.send(("err", u.format_exception(e)))
    if runner is not None:
        runner.close()


class RefProcess:
    """Client of the reference child; restarts it (replaying its setup) after a crash."""

    def __init__(self, log_dir: Path, timeout_s: float = 600.0) -> None:
        self.log_dir = Path(log_dir)
        self.timeout_s = timeout_s
        self.proc: Any = None
        self.conn: Any = None
        self.setup: list[tuple] = []  # the "load" and "workers" messages, replayed after a restart
        self.started = 0

    def _log(self) -> Path:
        return self.log_dir / f"reference_{self.started}.log"

    def _start(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.started += 1
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, str(self._log())), daemon=False)
        self.proc.start()
        child.close()
        self.conn = parent
        for msg in self.setup:
            self._call(msg)

    def _panic(self) -> str:
        try:
            lines = self._log().read_text(errors="replace").splitlines()
        except OSError:
            return ""
        for i, line in enumerate(lines):
            if "panicked at" in line:
                return " ".join(lines[i : i + 2]).strip()
        return "\n".join(lines[-5:])

    def _call(self, msg: tuple) -> Any:
        try:
            self.conn.send(msg)
            if not self.conn.poll(self.timeout_s):
                self.proc.kill()
                raise EOFError(f"no answer in {self.timeout_s} s")
            answer = self.conn.recv()
        except (EOFError, OSError) as e:
            self.proc.join(10)
            code = self.proc.exitcode
            self.proc = None
            raise RefCrash(f"the reference process died ({e or 'EOF'}, exit code {code}): {self._panic()}") from None
        if answer[0] == "err":
            raise RuntimeError(f"the reference raised:\n{answer[1]}")
        return answer[1]

    def call(self, msg: tuple, *, setup: bool = False) -> Any:
        if setup:
            self.setup.append(msg)
        if self.proc is None or not self.proc.is_alive():
            self._start()
            if setup:
                return None
        return self._call(msg)

    def close(self) -> None:
        if self.proc is not None:
            self.conn.close()
            self.proc.join(30)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)
            self.proc = None
