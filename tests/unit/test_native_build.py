"""The native builds (llama-cpp-python's wheel and llama-server) leave ggml's AMX kernels out on
x86-64 Linux, where they died with SIGILL on the development VM, and a change of flags makes a new
build rather than reusing one made without them."""

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


def test_the_flags_are_part_of_a_builds_identity(monkeypatch, tmp_path):
    monkeypatch.setenv("PONDER_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PONDER_NATIVE_CFLAGS", "")
    build.native_cflags.cache_clear()
    plain = build.build_dir("0.3.36", "")
    monkeypatch.setenv("PONDER_NATIVE_CFLAGS", build.NO_AMX)
    build.native_cflags.cache_clear()
    without_amx = build.build_dir("0.3.36", "")
    assert plain != without_amx and without_amx.parent == tmp_path
    assert build._flag_args() == [f"-DCMAKE_C_FLAGS={build.NO_AMX}", f"-DCMAKE_CXX_FLAGS={build.NO_AMX}"]
    assert build.build_dir("0.3.36", "-DGGML_CUDA=on") != without_amx
    build.native_cflags.cache_clear()
