"""Build llama-server from the llama.cpp source vendored in the pinned llama-cpp-python.

``python -m engine.backends.server.build`` (what the Makefile runs) fetches that exact sdist with
pip, configures its ``vendor/llama.cpp`` with CMake and builds the ``llama-server`` target only, so
the server runs the very llama.cpp commit the in-process path runs. GPU back ends come through the
same ``CMAKE_ARGS`` as llama-cpp-python (``-DGGML_CUDA=on``, ``-DGGML_METAL=on``, ``-DGGML_VULKAN=on``).

The binary is kept in the user cache folder, one per llama-cpp-python version and ``CMAKE_ARGS``
(like pip's wheel cache), so a fresh clone does not build it again. ``PONDER_LLAMA_SERVER`` points at
a binary of the user's own instead.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from engine.errors import PonderError

# Configured off: what the server needs no part of (and what would reach the network at build time:
# the prebuilt web UI comes from a Hugging Face bucket).
BASE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)


class ServerBuildError(PonderError):
    pass


def llama_cpp_python_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise ServerBuildError(
            "llama-cpp-python is not installed: run `make test` or `make run` first."
        ) from None


def cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("PONDER_CACHE_DIR") or user_cache_dir("ponder"))


def build_dir(version: str | None = None, cmake_args: str | None = None) -> Path:
    version = version or llama_cpp_python_version()
    args = os.environ.get("CMAKE_ARGS", "") if cmake_args is None else cmake_args
    # A change to how Ponder configures the build makes a new binary too.
    tag = hashlib.sha256((args.strip() + "\n" + " ".join(BASE_ARGS)).encode()).hexdigest()[:10]
    return cache_root() / f"llama-server-{version}-{tag}"


def server_binary(must_exist: bool = True) -> Path:
    """The llama-server Ponder starts: ``$PONDER_LLAMA_SERVER``, or the one this checkout built."""
    own = os.environ.get("PONDER_LLAMA_SERVER")
    if own:
        p = Path(own).expanduser()
        if must_exist and not p.is_file():
            raise ServerBuildError(f"PONDER_LLAMA_SERVER points at {p}, which is not a file.")
        return p
    p = build_dir() / "bin" / ("llama-server.exe" if os.name == "nt" else "llama-server")
    if must_exist and not p.is_file():
        raise ServerBuildError(
            "llama-server is not built yet: run `make server` (or `make test`), which builds it from the "
            "llama.cpp source of the pinned llama-cpp-python."
        )
    return p


def _run(cmd: list[str], cwd: Path | None = None, log=None) -> None:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=log or sys.stderr, flush=True)
    r = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT if log else None)
    if r.returncode != 0:
        raise ServerBuildError(f"{cmd[0]} failed with status {r.returncode}")


def _fetch_source(version: str, work: Path) -> Path:
    """The sdist's vendor/llama.cpp, without the models and docs it carries."""
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(work),
        ]
    )
    sdist = next(work.glob("llama_cpp_python-*.tar.gz"), None)
    if sdist is None:
        raise ServerBuildError(f"pip did not fetch the llama-cpp-python {version} source")
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    skip = (prefix + "models/", prefix + "docs/", prefix + "media/", prefix + "tools/ui/node_modules/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and not m.name.startswith(skip)]
        tar.extractall(work, members=members, filter="data")
    return work / prefix


def build(jobs: int | None = None, force: bool = False) -> Path:
    """Build llama-server unless this version and CMAKE_ARGS already have one; returns its path."""
    version = llama_cpp_python_version()
    out = build_dir(version)
    binary = out / "bin" / "llama-server"
    if binary.is_file() and not force:
        return binary
    if shutil.which("cmake") is None:
        raise ServerBuildError("CMake is needed to build llama-server (it builds llama-cpp-python too).")
    jobs = jobs or os.cpu_count() or 2
    extra = shlex.split(os.environ.get("CMAKE_ARGS", ""))
    with tempfile.TemporaryDirectory(prefix="ponder-llama-server-") as tmp:
        src = _fetch_source(version, Path(tmp))
        bld = Path(tmp) / "build"
        # The source has no git history: name the build after the release it came from, so the
        # server's /props build_info (recorded with every session) says which llama.cpp it is.
        ident = f"-DLLAMA_BUILD_COMMIT=llama-cpp-python-{version}"
        _run(["cmake", "-S", str(src), "-B", str(bld), *BASE_ARGS, ident, *extra])
        _run(["cmake", "--build", str(bld), "--target", "llama-server", "-j", str(jobs)])
        built = next(iter(bld.rglob("llama-server")), None)
        if built is None or not built.is_file():
            raise ServerBuildError("the build finished without a llama-server binary")
        (out / "bin").mkdir(parents=True, exist_ok=True)
        tmp_bin = out / "bin" / ".llama-server.tmp"
        shutil.copy2(built, tmp_bin)
        os.replace(tmp_bin, binary)  # a killed build never leaves half a binary behind
        (out / "CMAKE_ARGS").write_text(os.environ.get("CMAKE_ARGS", ""))
    return binary


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m engine.backends.server.build", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--force", action="store_true", help="build again even if a binary is cached")
    ap.add_argument("--print-path", action="store_true", help="print where the binary is (or will be)")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        if args.print_path:
            print(server_binary(must_exist=False))
            return 0
        path = build(args.jobs, args.force)
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
