"""Models from the Hugging Face Hub, got into the Hub's own cache: what the catalog offers, a
repository's GGUF files, a model's header read before it is downloaded (for the memory fit), and a
download that reports bytes and rate, resumes after a stop or a kill, can be cancelled, and checks
the file's sha256 before anything lists it.

huggingface_hub lists a repository (``HfApi.model_info`` with the files' sizes and LFS sha256),
finds the token (``HF_TOKEN`` or the file ``hf auth login`` writes; Ponder never stores one) and
names the cache's folders. The bytes are fetched here rather than by ``hf_hub_download``: since
huggingface_hub's PR 4228 (in 2.x) each download goes to a temporary file with a random name that
is deleted on failure, so a download killed halfway starts again from zero. Ponder writes
``blobs/<sha256>.incomplete`` (the name earlier huggingface_hub versions resumed from) and
continues it with an HTTP Range request; when it is whole and its sha256 matches, it becomes
``blobs/<sha256>`` with ``snapshots/<commit>/<file>`` linked to it, as huggingface_hub lays it out,
so ``try_to_load_from_cache`` and other tools find it, and Ponder's discovery lists it.

``HF_ENDPOINT`` is read at every call (a mirror, or the tests' fixture server), ``HF_HUB_OFFLINE``
refuses network access with a clear line. Every failure is a :class:`HubError` with one line for a
person; a cancelled download raises :class:`DownloadCancelled` and keeps its partial file.
"""

from engine.hub.catalog import (
    Machine,
    Offer,
    catalog_offers,
    find_offer,
    fit,
    hub_spec,
    need_bytes,
    offer,
    role_of,
    role_of_file,
    this_machine,
)
from engine.hub.listing import (
    DownloadCancelled,
    HubError,
    HubModel,
    Listing,
    RemoteFile,
    check_repo_id,
    endpoint,
    gated_line,
    has_token,
    list_repo,
    pick,
    quant_of,
    remote_header,
)
from engine.hub.transfer import Progress, cached, download, partial_bytes, snapshot_path
from engine.models import hf_cache_dir

__all__ = [
    "DownloadCancelled",
    "HubError",
    "HubModel",
    "Listing",
    "Machine",
    "Offer",
    "Progress",
    "RemoteFile",
    "cached",
    "catalog_offers",
    "check_repo_id",
    "download",
    "endpoint",
    "find_offer",
    "fit",
    "gated_line",
    "has_token",
    "hf_cache_dir",
    "hub_spec",
    "list_repo",
    "need_bytes",
    "offer",
    "partial_bytes",
    "pick",
    "quant_of",
    "remote_header",
    "role_of",
    "role_of_file",
    "snapshot_path",
    "this_machine",
]
