"""The process-wide side of llama.cpp: backend init, the log sink, what the build supports.

llama.cpp logs through one global callback. Ponder keeps its own: messages go to a ring buffer (so a
failed load can say *why* it failed, and the backend can read how many layers were offloaded), and
are echoed to stderr only when ``PONDER_LLAMA_LOG=1``.

The ggml device API (``ggml_backend_dev_*``) is not bound by llama-cpp-python 0.3.36; it is bound
here with ctypes on the ggml library that the bindings loaded.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import pathlib
import sys
import threading
from dataclasses import dataclass
from typing import Any

import llama_cpp

_LOG_LOCK = threading.Lock()
_LOG: collections.deque[tuple[int, int, str]] = collections.deque(maxlen=400)  # (serial, level, text)
_LOG_ECHO = os.environ.get("PONDER_LLAMA_LOG") == "1"
_state = {"initialised": False, "serial": 0, "last_level": 1}

# ggml_log_level in this llama.cpp: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continue previous
LOG_WARN = 3
LOG_ERROR = 4


@llama_cpp.llama_log_callback
def _log_callback(
    level: int, text: bytes, user_data: ctypes.c_void_p
) -> None:  # pragma: no cover - C calls it
    if level == 5:
        level = _state["last_level"]
    _state["last_level"] = level
    msg = text.decode("utf-8", errors="replace")
    with _LOG_LOCK:
        _state["serial"] += 1
        _LOG.append((_state["serial"], level, msg))
    if _LOG_ECHO:
        sys.stderr.write(msg)


def ensure_init() -> None:
    """Initialise the llama.cpp backend once per process and install Ponder's log sink."""
    if _state["initialised"]:
        return
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _state["initialised"] = True


def log_mark() -> int:
    """A position in the log; :func:`log_since` returns what was logged after it."""
    with _LOG_LOCK:
        return _state["serial"]


def log_since(mark: int) -> list[tuple[int, str]]:
    """(level, text) of every message logged after ``mark`` (the last 400 at most)."""
    with _LOG_LOCK:
        return [(lvl, msg) for serial, lvl, msg in _LOG if serial > mark]


def errors_since(mark: int) -> str:
    """The error lines logged since ``mark``, joined, for an exception message."""
    lines = [m.strip() for lvl, m in log_since(mark) if lvl == LOG_ERROR and m.strip()]
    return "; ".join(lines[-4:])


# --- devices ---------------------------------------------------------------------------------------

DEVICE_TYPES = {0: "CPU", 1: "GPU", 2: "iGPU", 3: "accelerator", 4: "meta"}


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    type: str
    memory_free: int
    memory_total: int


def _ggml_lib() -> ctypes.CDLL | None:
    """The ggml shared library next to libllama (it holds the device registry)."""
    libdir = pathlib.Path(llama_cpp.__file__).parent / "lib"
    for name in ("libggml.so", "libggml.dylib", "ggml.dll", "libggml-base.so"):
        p = libdir / name
        if p.exists():
            try:
                lib = ctypes.CDLL(str(p))
                lib.ggml_backend_dev_count  # noqa: B018 - probe the symbol
                return lib
            except (OSError, AttributeError):
                continue
    # Some builds link everything into libllama.
    lib = llama_cpp.llama_cpp._lib
    return lib if hasattr(lib, "ggml_backend_dev_count") else None


def devices() -> list[Device]:
    """Every ggml backend device this build registered (CPU always; CUDA/Metal/Vulkan when built in)."""
    ensure_init()
    lib = _ggml_lib()
    if lib is None:
        return []
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for fn in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, fn).restype = ctypes.c_char_p
        getattr(lib, fn).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    out = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        out.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"").decode(errors="replace"),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(errors="replace"),
                type=DEVICE_TYPES.get(lib.ggml_backend_dev_type(dev), "unknown"),
                memory_free=int(free.value),
                memory_total=int(total.value),
            )
        )
    return out


@dataclass(frozen=True)
class BuildInfo:
    llama_cpp_python: str
    gpu_offload: bool
    max_parallel_sequences: int
    system_info: str
    devices: tuple[Device, ...]

    @property
    def accelerator(self) -> str:
        """A one-word name for the backend a user cares about: CUDA, Metal, Vulkan ... or CPU."""
        for d in self.devices:
            if d.type in ("GPU", "iGPU"):
                return d.name.rstrip("0123456789") or d.name
        return "CPU"

    def as_dict(self) -> dict:
        return {
            "llama_cpp_python": self.llama_cpp_python,
            "gpu_offload": self.gpu_offload,
            "accelerator": self.accelerator,
            "max_parallel_sequences": self.max_parallel_sequences,
            "system_info": self.system_info,
            "devices": [d.__dict__ for d in self.devices],
        }


def build_info() -> BuildInfo:
    ensure_init()
    return BuildInfo(
        llama_cpp_python=llama_cpp.__version__,
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        max_parallel_sequences=int(llama_cpp.llama_max_parallel_sequences()),
        system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        devices=tuple(devices()),
    )


def build_snapshot() -> dict[str, Any]:
    """What a saved session records about the llama.cpp build that ran it (a rerun compares)."""
    b = build_info()
    return {
        "llama_cpp_python": b.llama_cpp_python,
        "system_info": b.system_info,
        "gpu_offload": b.gpu_offload,
        "devices": [dataclasses.asdict(d) for d in b.devices],
    }


# --- a vocabulary: text to tokens and back (the in-process backend and a GGUF tokenizer share these) -


def tokenize(vocab: Any, text: str, add_special: bool, parse_special: bool) -> list[int]:
    """``llama_tokenize`` of ``text`` on ``vocab``, the buffer grown when the first is too small."""
    data = text.encode("utf-8")
    n_max = len(data) + 16
    buf = (llama_cpp.llama_token * n_max)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, n_max, add_special, parse_special)
    if n < 0:
        n_max = -n
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, n_max, add_special, parse_special)
    return list(buf[:n])


def token_piece(vocab: Any, token: int, special: bool) -> bytes:
    """One token's bytes (``special``: control tokens written out, else empty)."""
    buf = ctypes.create_string_buffer(128)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, 128, 0, special)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, -n, 0, special)
    return buf.raw[: max(n, 0)]
