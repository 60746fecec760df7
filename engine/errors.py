"""Typed errors of the engine.

Every condition a user can cause (a missing file, a broken GGUF, a prompt longer than the context, a
full KV cache, cancelling) becomes one of these, with a message meant for a person. Conditions that
would make llama.cpp abort the process are checked in Python first and raised as
:class:`InvalidRequestError`, so they never reach the C library.
"""

from __future__ import annotations


class PonderError(Exception):
    """Base of every error the engine raises on purpose. ``str(err)`` is the user-facing message."""


# --- model files -----------------------------------------------------------------------------------


class ModelLoadError(PonderError):
    """A model file could not be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"Cannot load model {path}: {reason}")


class ModelNotFoundError(ModelLoadError):
    """The path does not exist or is not a file."""


class NotAGGUFError(ModelLoadError):
    """The file does not start with the GGUF magic bytes (a text file, a safetensors file, ...)."""


class TruncatedGGUFError(ModelLoadError):
    """The header is readable but the file ends before its tensors do (an interrupted download)."""


class UnsupportedModelError(ModelLoadError):
    """The GGUF is valid but this llama.cpp build cannot run it, or Ponder cannot search with it."""


# --- requests --------------------------------------------------------------------------------------


class InvalidRequestError(PonderError, ValueError):
    """A parameter is out of range (checked before it reaches llama.cpp, which would abort)."""


class PromptTooLongError(PonderError):
    """The prompt does not fit in the context window."""

    def __init__(self, n_prompt: int, n_ctx: int) -> None:
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx
        super().__init__(
            f"The prompt is {n_prompt} tokens but the context holds {n_ctx}. "
            "Shorten the prompt or raise the context size."
        )


class KVCacheFullError(PonderError):
    """llama_decode found no room in the KV cache for the batch (it returned 1)."""

    def __init__(self, n_ctx: int, n_live: int, n_tokens: int) -> None:
        self.n_ctx = n_ctx
        self.n_live = n_live
        super().__init__(
            f"The KV cache is full: {n_live} live branches need room for {n_tokens} more tokens in a "
            f"context of {n_ctx} cells. Raise the context size (--ctx) or lower the tokens a "
            "solution may take (--max-tokens)."
        )


class TooManyBranchesError(PonderError):
    """Every sequence id of the context is in use."""

    def __init__(self, n_seq_max: int) -> None:
        self.n_seq_max = n_seq_max
        super().__init__(
            f"The strategies needed more than the {n_seq_max} sequences this context decodes at once "
            "(samples, beams and the judge's checks together). Use a smaller --budget, run the "
            "strategies one after another (--sequential), or raise --parallel."
        )


class DecodeError(PonderError):
    """llama_decode failed for a reason other than a full cache."""


class Cancelled(PonderError):
    """The work was cancelled by the user."""

    def __init__(self, message: str = "Cancelled") -> None:
        super().__init__(message)


class WrongThreadError(PonderError, RuntimeError):
    """A backend was used from a thread other than the one that owns its llama.cpp context."""
