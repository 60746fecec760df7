"""A GGUF converted to a Hugging Face model folder, for vLLM (which reads no Q4_1 GGUF).

Run by the vLLM environment's Python (``engine.backends.server.build.converted_model``), not imported
by Ponder: ``python convert_gguf.py MODEL.gguf OUT_DIR``. transformers de-quantizes the GGUF's weights
to float32 and reads its tokenizer; the weights are written as safetensors (a tied output head left
out, as the original repositories have it) with the config, generation config and tokenizer files.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def convert(gguf_path: Path, out: Path) -> None:
    import torch  # type: ignore[import-not-found]  # only in the vLLM environment that runs this script
    from safetensors.torch import save_file  # type: ignore[import-not-found]  # only in the vLLM environment that runs this script
    from transformers import AutoModelForCausalLM, AutoTokenizer  # type: ignore[import-not-found]  # only in the vLLM environment that runs this script

    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # de-quantized: plain float32 weights
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        weights.pop("lm_head.weight", None)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=1))
    model.generation_config.save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    t0 = time.time()
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"converted {sys.argv[1]} in {time.time() - t0:.1f} s", file=sys.stderr)
