"""Start a local llama-server (the one ``build.py`` made) and wait until it serves.

``ponder serve``, the tests and ``ponder bench --server`` without a URL use this. The server listens
on loopback only unless told otherwise; its log goes to a file whose last lines are shown when it
fails to start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from engine import children
from engine.errors import PonderError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LlamaServer:
    """One llama-server process. ``with LlamaServer(model) as srv: srv.url``."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        parallel: int = 8,
        ctx: int | None = None,
        n_gpu_layers: int = 0,
        threads: int | None = None,
        api_key: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        """The process is started by :meth:`start` (or ``with``); the binary is the one built from the
        pinned llama.cpp source, its log a temporary file (``log_path``)."""
        from engine.backends.server.build import server_binary

        self.model = Path(model)
        if not self.model.is_file():
            raise PonderError(f"No model file at {self.model}.")
        self.binary = server_binary()
        self.host = host
        self.port = port or free_port(host)
        self.parallel = parallel
        # Every slot may hold a whole solution (2,048 tokens) after a ~300-token prompt.
        self.ctx = ctx or max(4096, parallel * 2560)
        self.n_gpu_layers = n_gpu_layers
        self.threads = threads
        self.api_key = api_key
        self.extra = extra
        self._log_path = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._log_path

    def command(self) -> list[str]:
        cmd = [
            str(self.binary),
            "-m",
            str(self.model),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--parallel",
            str(self.parallel),
            "--ctx-size",
            str(self.ctx),
            "--n-gpu-layers",
            "all" if self.n_gpu_layers < 0 else str(self.n_gpu_layers),
            "--kv-unified",  # any slot may use the whole context: long beams and short ones share it
            "--no-webui",
            "--alias",
            self.model.name,  # the model's id in /v1/models (else its full path)
        ]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        cmd += list(self.extra)
        return cmd

    def start(self, timeout: float = 120.0) -> LlamaServer:
        log = open(self._log_path, "wb")  # noqa: SIM115 - closed with the process
        env = dict(os.environ)
        if self.api_key:
            env["LLAMA_API_KEY"] = self.api_key
        try:
            self.proc = children.start(  # ends with Ponder, even when Ponder is killed hard
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # Ctrl+C in a terminal reaches Ponder, which stops it cleanly
            )
        except OSError as e:
            log.close()
            raise PonderError(f"Cannot start {self.binary}: {e}") from e
        self._log = log
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                status = self.proc.returncode
                raise PonderError(
                    f"llama-server exited with status {status} while starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PonderError(f"llama-server did not become healthy within {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> LlamaServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
