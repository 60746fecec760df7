"""The native builds (llama-cpp-python's wheel and llama-server) leave ggml's AMX kernels out on
x86-64 Linux, where they died with SIGILL on the development VM: what the C compiler would build in
is asked of the compiler itself. That the flags are part of a build's identity is in
tests/unit/test_native_build.py."""

from __future__ import annotations

import platform
import subprocess

from engine.backends.server import build


def _compiler_sees_amx() -> bool:
    r = subprocess.run(["cc", "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True)
    return "__AMX_TILE__" in r.stdout


def test_amx_is_left_out_where_the_compiler_would_build_it_in(monkeypatch):
    monkeypatch.delenv("PONDER_NATIVE_CFLAGS", raising=False)
    build.native_cflags.cache_clear()
    flags = build.native_cflags()
    if platform.system() == "Linux" and platform.machine() == "x86_64" and _compiler_sees_amx():
        assert flags == build.NO_AMX
        # the flags win over -march=native whatever their order: no AMX macro left
        cmd = ["cc", *flags.split(), "-march=native", "-dM", "-E", "-"]
        r = subprocess.run(cmd, input="", capture_output=True, text=True)
        assert "__AMX" not in r.stdout
    else:
        assert flags == ""
    build.native_cflags.cache_clear()
