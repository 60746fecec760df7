"""What the app and ``ponder models --catalog`` offer to get from the Hub, before any byte moves: the
catalog's Hub entries, the file a repository's listing gives for a quantization, the fit on this
machine, and a GGUF header read from the first megabytes of a file as from the whole."""

from __future__ import annotations

import io

import pytest

from engine import hub
from engine.gguf_info import read_gguf, read_gguf_header
from engine.models import CatalogEntry, describe, load_catalog


def test_every_catalog_entry_with_a_hub_source_names_a_repo_a_file_per_quant_and_a_role():
    offers = hub.catalog_offers()
    assert len(offers) >= 15
    roles = {o.role for o in offers}
    assert roles == {"policy", "PRM", "thinking"}
    for o in offers:
        assert "/" in o.repo and o.file.endswith(".gguf"), o
        assert o.quant in o.quants and "{quant}" not in o.file
        # the file's name says its quantization, and the catalog's own globs know the file again
        assert (hub.quant_of(o.file) or "").upper() == o.quant.upper(), o.file
        assert o.entry.matches(__import__("pathlib").Path(o.file)), (o.entry.id, o.file)
        for q in o.quants:
            other = hub.offer(o.entry, q)
            assert other is not None and hub.quant_of(other.file).upper() == q.upper()
    ids = {o.entry.id for o in offers}
    # the families the issue names: Qwen2.5 (+Math), Llama-3.2/3.1, SmolLM2, a thinking model, token PRMs
    for want in (
        "qwen2.5-1.5b-instruct",
        "qwen2.5-math-1.5b-instruct",
        "llama-3.2-1b-instruct",
        "llama-3.1-8b-instruct",
        "smollm2-360m-instruct",
        "qwen3-1.7b",
        "math-shepherd-mistral-7b-prm",
        "rlhflow-llama3.1-8b-prm-deepseek",
    ):
        assert want in ids, want
    prms = [o for o in offers if o.role == "PRM"]
    assert all(o.entry.prm_format in ("math-shepherd", "rlhflow") for o in prms)


def test_a_downloaded_catalog_file_is_known_by_its_role(tmp_path):
    catalog = load_catalog()
    for o in hub.catalog_offers(catalog):
        e = describe(tmp_path / o.file, "huggingface", catalog)  # missing: error, but the role is by name
        assert e.catalog_id == o.entry.id, (o.file, e.catalog_id)
        assert ("prm" in e.roles) == (o.role == "PRM")


def test_an_unknown_quant_is_refused_with_the_ones_there_are():
    entry = next(o.entry for o in hub.catalog_offers() if o.entry.id == "llama-3.2-1b-instruct")
    with pytest.raises(hub.HubError, match="comes in Q4_K_M, Q8_0"):
        hub.offer(entry, "Q3_K_XS")


@pytest.mark.parametrize(
    "name, quant",
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-1.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("math-shepherd-mistral-7b-prm.Q4_0.gguf", "Q4_0"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", "Q4_K_M"),
        ("Meta-Llama-3.1-8B-Instruct-bf16.gguf", "BF16"),
        ("Qwen2.5-7B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("model.gguf", None),
    ],
)
def test_quantization_read_from_file_names(name, quant):
    assert hub.quant_of(name) == quant


def _listing(*names: str, sizes: dict[str, int] | None = None) -> hub.Listing:
    files = tuple(hub.RemoteFile(n, (sizes or {}).get(n, 100), "a" * 64) for n in names)
    return hub.Listing("o/r", "c" * 40, "main", files)


def test_pick_by_file_quant_or_the_only_one_and_split_parts_as_one_model():
    one = _listing("README.md", "m-Q4_K_M.gguf")
    assert hub.pick(one).file == "m-Q4_K_M.gguf"
    many = _listing(
        "m-Q4_K_M.gguf",
        "m-Q8_0.gguf",
        "big-q4_k_m-00001-of-00002.gguf",
        "big-q4_k_m-00002-of-00002.gguf",
        sizes={"big-q4_k_m-00001-of-00002.gguf": 300, "big-q4_k_m-00002-of-00002.gguf": 50},
    )
    models = many.ggufs()
    assert [m.name for m in models] == ["m-Q4_K_M.gguf", "m-Q8_0.gguf", "big-q4_k_m-00001-of-00002.gguf"]
    split = models[2]
    assert len(split.parts) == 2 and split.size == 350
    assert hub.pick(many, quant="q8_0").file == "m-Q8_0.gguf"
    assert hub.pick(many, file="big-q4_k_m-00002-of-00002.gguf") == split  # a later part names its model
    with pytest.raises(hub.HubError, match="several Q4_K_M GGUFs"):
        hub.pick(many, quant="Q4_K_M")
    with pytest.raises(hub.HubError, match="has 3 GGUFs; choose one with --file or --quant"):
        hub.pick(many)
    with pytest.raises(hub.HubError, match="no Q2_K GGUF; it has: Q4_K_M, Q8_0"):
        hub.pick(many, quant="Q2_K")
    with pytest.raises(hub.HubError, match="README.md is not a GGUF file"):
        hub.pick(one, file="README.md")
    with pytest.raises(hub.HubError, match="has no file nope.gguf. GGUFs there: m-Q4_K_M.gguf"):
        hub.pick(one, file="nope.gguf")
    with pytest.raises(hub.HubError, match="holds no GGUF"):
        hub.pick(_listing("README.md"))
    incomplete = _listing("big-q4_k_m-00001-of-00002.gguf")  # a part missing: not offered
    assert incomplete.ggufs() == []


@pytest.mark.parametrize("text", ["", "noslash", "a/b/c d", "../x", "/"])
def test_a_repo_id_that_is_not_one_is_refused(text):
    with pytest.raises(hub.HubError, match="not a Hub repository id"):
        hub.check_repo_id(text)


def test_a_pasted_page_address_is_read_as_its_repo_id():
    assert hub.check_repo_id("https://huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF/tree/main") == (
        "bartowski/Llama-3.2-1B-Instruct-GGUF"
    )


def test_fit_counts_policy_and_prm_together_against_ram_then_gpu():
    gb = 1 << 30
    cpu_only = hub.Machine(ram_available=10 * gb, gpu_free=0)
    with_gpu = hub.Machine(ram_available=10 * gb, gpu_free=24 * gb)
    assert hub.fit(5 * gb, cpu_only) == "fits"
    assert hub.fit(9 * gb, cpu_only) == "too big"  # over 85% of what is available
    assert hub.fit(9 * gb, with_gpu) == "needs GPU offload"
    assert hub.fit(40 * gb, with_gpu) == "too big"


def test_need_adds_the_kv_cache_from_the_header_and_the_partner_model(model_path):
    info = read_gguf(model_path)
    alone = hub.need_bytes(info.file_size, None, 4096)
    assert alone == info.file_size  # no header yet: the file's size
    with_kv = hub.need_bytes(info.file_size, info, 4096)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64: K and V in f16 for 4096 cells = 94,371,840 bytes
    assert with_kv - info.file_size == 2 * 2 * 4096 * 30 * 3 * 64
    assert hub.need_bytes(info.file_size, info, 4096, partner=info) == 2 * with_kv


def test_a_header_read_from_the_first_megabytes_equals_the_whole_files(model_path):
    whole = read_gguf(model_path)
    with open(model_path, "rb") as f:
        prefix = f.read(4 << 20)  # what remote_header asks the Hub for first
    info = read_gguf_header(io.BytesIO(prefix), "fixture/smol/x.gguf", whole.file_size)
    for k in ("n_params", "n_layer", "architecture", "quantization", "context_length", "file_size"):
        assert getattr(info, k) == getattr(whole, k), k
    assert info.metadata == whole.metadata
    # too short a prefix says so (the caller asks for more), it is not taken for a broken file
    from engine.errors import TruncatedGGUFError

    with pytest.raises(TruncatedGGUFError):
        read_gguf_header(io.BytesIO(prefix[: 1 << 16]), "x", whole.file_size)


def test_catalog_entries_without_hub_source_offer_nothing():
    e = CatalogEntry(id="x", match=("x*.gguf",), roles=("policy",))
    assert hub.offer(e) is None
