"""Real, smaller GGUFs made from the embedded model for tests that need speed or a second size.

``drop_layers(src, dst, keep)`` writes a copy of a GGUF with only its first ``keep`` transformer
blocks (``blk.0`` .. ``blk.{keep-1}``), the block count in its metadata set to match, and everything
else — tokenizer, chat template, embeddings, output — as it was. llama.cpp loads and runs it like any
model (its text is poorer, its speed about layers/keep times higher). Uses the ``gguf`` package.
"""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def drop_layers(src: str | Path, dst: str | Path, keep: int, metadata: dict | None = None) -> Path:
    """(``metadata``: string fields to set in the copy, e.g. another ``tokenizer.chat_template``.)"""
    import gguf

    reader = gguf.GGUFReader(str(src))
    arch = str(reader.fields[gguf.Keys.General.ARCHITECTURE].contents())
    writer = gguf.GGUFWriter(str(dst), arch=arch, endianess=reader.endianess)
    block_count = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = keep if field.name == block_count else field.contents()
        if metadata and field.name in metadata:
            value = metadata[field.name]
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    tensors = [t for t in reader.tensors if not ((m := _BLOCK.match(t.name)) and int(m.group(1)) >= keep)]
    for t in tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return Path(dst)
