"""A process reward model of Qwen2.5-Math-PRM's architecture (``Qwen2ForProcessRewardModel``: a
classification head, two classes per step tag) with random weights, for vLLM's ``--load-format
dummy``: a small config.json and the embedded model's tokenizer with the PRM's step tag ``<extra_0>``
added as a special token. Its scores mean nothing; the protocol, the formatting and the step alignment
are what the tests check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

STEP_TAG = "<extra_0>"


def write_dummy_prm(tokenizer_folder: Path, out: Path) -> int:
    """The model folder at ``out``; returns the step tag's token id (vLLM's ``step_tag_id``)."""
    out.mkdir(parents=True, exist_ok=True)
    tj = json.loads((tokenizer_folder / "tokenizer.json").read_text())
    tag_id = max(len(tj["model"]["vocab"]), 1 + max(t["id"] for t in tj["added_tokens"]))
    entry = {"content": STEP_TAG, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
    tj["added_tokens"].append({"id": tag_id, **entry, "special": True})
    (out / "tokenizer.json").write_text(json.dumps(tj))
    tc = json.loads((tokenizer_folder / "tokenizer_config.json").read_text())
    tc.setdefault("added_tokens_decoder", {})[str(tag_id)] = {**entry, "special": True}
    (out / "tokenizer_config.json").write_text(json.dumps(tc))
    if (tokenizer_folder / "chat_template.jinja").is_file():
        shutil.copy(tokenizer_folder / "chat_template.jinja", out / "chat_template.jinja")
    config = {
        "architectures": ["Qwen2ForProcessRewardModel"],
        "model_type": "qwen2",
        # head_dim 64: vLLM's CPU attention has no kernel for 16
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "vocab_size": tag_id + 1,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "num_labels": 2,
    }
    (out / "config.json").write_text(json.dumps(config))
    return tag_id
