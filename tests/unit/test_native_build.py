"""A change of the native builds' flags (llama-cpp-python's wheel and llama-server) makes a new
build rather than reusing one made without them. That AMX is left out where the compiler would
build it in (it died with SIGILL on the development VM) asks the compiler: in
tests/integration/test_native_build_amx.py."""

from __future__ import annotations

from engine.backends.server import build


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
