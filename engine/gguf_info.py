"""Read what a GGUF file says about itself without loading its weights, and check it is whole.

The header (key/value metadata and tensor table) is parsed with the ``gguf`` package's type tables;
long arrays (the tokenizer vocabulary) are skipped, not materialised, so a 150k-token vocabulary costs
milliseconds. A file is *truncated* when its tensor table points past its end: that is what an
interrupted download looks like, and llama.cpp would otherwise fail (or worse) at load time.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, LlamaFileType

from engine.errors import ModelLoadError, ModelNotFoundError, NotAGGUFError, TruncatedGGUFError

GGUF_MAGIC = b"GGUF"
_SCALAR = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
# Arrays longer than this are skipped (their length is kept), e.g. tokenizer.ggml.tokens.
_ARRAY_KEEP = 64
_MAX_STRING = 1 << 24  # 16 MiB: longer is a corrupt length field, not a chat template


@dataclass
class GGUFInfo:
    """What the header says. ``metadata`` holds scalars, strings and short arrays."""

    path: str
    file_size: int
    version: int
    architecture: str
    name: str
    n_params: int
    n_tensors: int
    quantization: str
    context_length: int | None
    n_layer: int | None
    has_chat_template: bool
    data_end: int
    metadata: dict[str, Any] = field(repr=False, default_factory=dict)
    array_lengths: dict[str, int] = field(repr=False, default_factory=dict)
    # Where each skipped (long) array lies in the file: key -> (item type, first byte, end).
    array_spans: dict[str, tuple[int, int, int]] = field(repr=False, default_factory=dict)

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return t if isinstance(t, str) else None

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("metadata")
        d.pop("array_lengths")
        return d


class _Reader:
    def __init__(self, f: BinaryIO, path: str, size: int) -> None:
        self.f, self.path, self.size = f, path, size

    def read(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise TruncatedGGUFError(self.path, "the file ends inside its header (an incomplete download?)")
        return b

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > _MAX_STRING or self.f.tell() + n > self.size:
            if self.f.tell() + n > self.size and n <= _MAX_STRING:
                raise TruncatedGGUFError(
                    self.path, "the file ends inside its header (an incomplete download?)"
                )
            raise ModelLoadError(self.path, f"corrupt GGUF header (a string of {n} bytes)")
        return self.read(n).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if n > self.size:  # longer than the whole file: a corrupt length field, not a cut file
            raise ModelLoadError(self.path, f"corrupt GGUF header (a length of {n} bytes)")
        if self.f.tell() + n > self.size:
            raise TruncatedGGUFError(self.path, "the file ends inside its header (an incomplete download?)")
        self.f.seek(n, os.SEEK_CUR)

    def skip_strings(self, n: int) -> None:
        """Skip ``n`` length-prefixed strings (a tokenizer's vocabulary) reading 1 MiB at a time:
        a 150k-token vocabulary in milliseconds rather than a read and a seek per token."""
        f = self.f
        base = f.tell()  # file position of buf[0]
        buf = f.read(min(1 << 20, self.size - base))
        off = 0
        for _ in range(n):
            if off + 8 > len(buf):
                base += off
                f.seek(base)
                buf = f.read(min(1 << 20, self.size - base))
                off = 0
                if len(buf) < 8:
                    raise TruncatedGGUFError(
                        self.path, "the file ends inside its header (an incomplete download?)"
                    )
            (length,) = struct.unpack_from("<Q", buf, off)
            if length > self.size:
                raise ModelLoadError(self.path, f"corrupt GGUF header (a length of {length} bytes)")
            off += 8 + length
            if base + off > self.size:
                raise TruncatedGGUFError(
                    self.path, "the file ends inside its header (an incomplete download?)"
                )
        f.seek(base + off)

    def value(self, vtype: int) -> tuple[Any, int | None]:
        """(value, array length or None). Long arrays come back as None with their length."""
        if vtype == GGUFValueType.STRING:
            return self.string(), None
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[GGUFValueType(vtype)]), None
        if vtype == GGUFValueType.ARRAY:
            itype = self.unpack("<I")
            n = self.unpack("<Q")
            if n > 1 << 40:  # no real array is this long; a shorter bogus count runs into EOF
                raise ModelLoadError(self.path, f"corrupt GGUF header (an array of {n} items)")
            if n > _ARRAY_KEEP:
                if itype in _SCALAR:
                    self.skip(n * struct.calcsize(_SCALAR[GGUFValueType(itype)]))
                elif itype == GGUFValueType.STRING:
                    self.skip_strings(n)
                else:
                    for _ in range(n):
                        self.value(itype)
                return None, n
            return [self.value(itype)[0] for _ in range(n)], n
        raise ModelLoadError(self.path, f"corrupt GGUF header (unknown value type {vtype})")


def _shown(name: str, limit: int = 60) -> str:
    """A name read from a file, fit for a message: printable, and short (a corrupt length field can
    make a "name" of megabytes of binary)."""
    text = name if name.isprintable() else repr(name)[1:-1]
    return text if len(text) <= limit else text[:limit] + "…"


def check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(str(p), "no such file")
    if not p.is_file():
        raise ModelNotFoundError(str(p), "not a file")
    return p


def _quant_name(metadata: dict[str, Any], tensor_types: dict[int, int]) -> str:
    ft = metadata.get("general.file_type")
    if isinstance(ft, int):
        try:
            return LlamaFileType(ft).name.removeprefix("MOSTLY_")
        except ValueError:
            pass
    if tensor_types:  # the most common tensor type by element count
        t = max(tensor_types, key=tensor_types.__getitem__)
        try:
            return GGMLQuantizationType(t).name
        except ValueError:
            return f"type {t}"
    return "unknown"


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse the header of a GGUF file; raise a typed :class:`ModelLoadError` if it is not a whole,
    valid GGUF. Never reads tensor data."""
    p = check_path(path)
    size = p.stat().st_size
    try:
        f = open(p, "rb")
    except OSError as e:
        raise ModelLoadError(str(p), f"cannot open: {e.strerror or e}") from e
    with f:
        return read_gguf_header(f, str(p), size, stem=p.stem)


def read_gguf_header(f: BinaryIO, name: str, size: int, stem: str | None = None) -> GGUFInfo:
    """Parse a GGUF header from ``f``, a file of ``size`` bytes: a file on disk, or the first
    megabytes of a remote one (``engine.hub`` reads a model's header from the Hub this way before
    it is downloaded; a prefix that ends inside the header raises :class:`TruncatedGGUFError`, and
    the caller asks for more)."""
    stem = stem if stem is not None else Path(name).stem
    head = f.read(4)
    if head != GGUF_MAGIC:
        what = "empty file" if not head else f"starts with {head!r}"
        raise NotAGGUFError(name, f"not a GGUF file ({what}; a GGUF starts with b'GGUF')")
    r = _Reader(f, name, size)
    version = r.unpack("<I")
    if version not in (2, 3):
        raise ModelLoadError(name, f"unsupported GGUF version {version}")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise ModelLoadError(name, "corrupt GGUF header (absurd tensor or key count)")
    metadata: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    spans: dict[str, tuple[int, int, int]] = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.unpack("<I")
        start = f.tell()
        val, n = r.value(vtype)
        if n is not None:
            arrays[key] = n
            if val is None:  # skipped: (item type, first item, end)
                spans[key] = (struct.unpack("<I", _peek(f, start, 4))[0], start + 12, f.tell())
        if val is not None:
            metadata[key] = val
    alignment = int(metadata.get("general.alignment", 32) or 32)
    tensors = []
    for _ in range(n_tensors):
        tname = r.string()
        n_dims = r.unpack("<I")
        if n_dims > 8:
            raise ModelLoadError(name, f"corrupt tensor table ({_shown(tname)}: {n_dims} dimensions)")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        ttype = r.unpack("<I")
        offset = r.unpack("<Q")
        tensors.append((tname, dims, ttype, offset))
    header_end = f.tell()
    data_start = (header_end + alignment - 1) // alignment * alignment
    n_params = 0
    data_end = data_start
    type_elems: dict[int, int] = {}
    for tname, dims, ttype, offset in tensors:
        n = 1
        for d in dims:
            n *= d
        n_params += n
        type_elems[ttype] = type_elems.get(ttype, 0) + n
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise ModelLoadError(name, f"tensor {_shown(tname)} has an unknown type {ttype}") from None
        nbytes = n // block * type_size
        data_end = max(data_end, data_start + offset + nbytes)
    if data_end > size:
        missing = data_end - size
        raise TruncatedGGUFError(
            name,
            f"the file is truncated: its tensors need {data_end:,} bytes but it has {size:,} "
            f"({missing:,} missing; an incomplete download?)",
        )
    arch = str(metadata.get("general.architecture", "")) or "unknown"

    def arch_key(k: str) -> Any:
        return metadata.get(f"{arch}.{k}")

    ctx = arch_key("context_length")
    n_layer = arch_key("block_count")
    return GGUFInfo(
        path=name,
        file_size=size,
        version=version,
        architecture=arch,
        name=str(metadata.get("general.name", "") or stem),
        n_params=n_params,
        n_tensors=n_tensors,
        quantization=_quant_name(metadata, type_elems),
        context_length=int(ctx) if isinstance(ctx, int) else None,
        n_layer=int(n_layer) if isinstance(n_layer, int) else None,
        has_chat_template=isinstance(metadata.get("tokenizer.chat_template"), str),
        data_end=data_end,
        metadata=metadata,
        array_lengths=arrays,
        array_spans=spans,
    )


def _peek(f: BinaryIO, at: int, n: int) -> bytes:
    here = f.tell()
    f.seek(at)
    b = f.read(n)
    f.seek(here)
    return b


def check_vocab(info: GGUFInfo) -> None:
    """What llama.cpp asserts (and so aborts the process on) when it builds the vocabulary, checked
    first: every token's text (up to a NUL byte, as llama.cpp reads it) is distinct. A damaged file
    fails here with a message instead."""
    span = info.array_spans.get("tokenizer.ggml.tokens")
    if span is None or span[0] != GGUFValueType.STRING:
        return  # short or missing: llama.cpp reports those itself
    _, start, end = span
    with open(info.path, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    seen: set[bytes] = set()
    pos = 0
    n = info.array_lengths["tokenizer.ggml.tokens"]
    for i in range(n):
        (length,) = struct.unpack_from("<Q", raw, pos)
        # llama.cpp reads each token as a C string: text after a NUL byte is lost.
        tok = raw[pos + 8 : pos + 8 + length].split(b"\0", 1)[0]
        pos += 8 + length
        if tok in seen:
            raise ModelLoadError(
                info.path,
                f"damaged vocabulary: token {i} ({tok.decode('utf-8', 'replace')!r}) appears twice; "
                "llama.cpp cannot load it (download the file again)",
            )
        seen.add(tok)


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """How a run names its model file: sha256 of the first MiB plus the size (cheap, and enough to
    tell two downloads apart)."""
    p = Path(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(1 << 20))
    return {"path": str(p), "size": p.stat().st_size, "sha256_1mb": h.hexdigest()}


def human_size(n: int) -> str:
    x = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if x < 1024 or unit == "TB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    return f"{x:.1f} TB"


def human_params(n: int) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}".replace(".0", "")
    return str(n)
