"""A Hugging Face tokenizer folder for the embedded model, written from its GGUF (the tests cannot
download one): ``tokenizer.json`` (byte-level BPE from the GGUF's tokens and merges, digits split one
by one as llama.cpp's ``smollm`` pre-tokenizer does, the control tokens as special added tokens),
``tokenizer_config.json`` (chat template, BOS, EOS) and ``config.json`` (the shape, for the parameter
count), as SmolLM2's repository holds them."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.fields[key]
    if len(f.types) == 1 and f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    if f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [int(f.parts[i][0]) for i in f.data]
    return f.parts[f.data[0]][0].item()


def write_hf_folder(gguf_path: str | Path, out: Path) -> Path:
    r = gguf.GGUFReader(str(gguf_path))
    tokens = _field(r, "tokenizer.ggml.tokens")
    types = _field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in _field(r, "tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    control = [i for i, t in enumerate(types) if t == 3]  # llama.cpp's CONTROL
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in control])
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    arch = _field(r, "general.architecture")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": _field(r, "tokenizer.chat_template"),
                "bos_token": tokens[_field(r, "tokenizer.ggml.bos_token_id")],
                "eos_token": tokens[_field(r, "tokenizer.ggml.eos_token_id")],
                "add_bos_token": False,
            }
        )
    )
    (out / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "hidden_size": _field(r, f"{arch}.embedding_length"),
                "num_hidden_layers": _field(r, f"{arch}.block_count"),
                "intermediate_size": _field(r, f"{arch}.feed_forward_length"),
                "num_attention_heads": _field(r, f"{arch}.attention.head_count"),
                "num_key_value_heads": _field(r, f"{arch}.attention.head_count_kv"),
                "vocab_size": len(tokens),
                "tie_word_embeddings": "output.weight" not in {t.name for t in r.tensors},
            }
        )
    )
    return out
