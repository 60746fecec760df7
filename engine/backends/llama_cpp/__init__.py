"""The in-process backend: llama.cpp through llama-cpp-python's low-level API.

:class:`Backend` is one model with one batched context (see ``backend.py``), built from pieces with
one job each: ``vocab`` (text in and out), ``branches`` (the KV sequences), ``decoding`` (one decode
for every live branch, then sampling), ``reading`` (logprobs without sampling). ``executor.py`` puts
it under the scheduler as the :class:`~engine.executor.Executor` for in-process runs.
"""

from engine.backends.llama_cpp.backend import Backend
from engine.backends.llama_cpp.branch import Branch, StepStats, TokenEvent, plain_chain
from engine.backends.llama_cpp.config import (
    FINISH_CANCELLED,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    BackendConfig,
    ModelInfo,
    default_threads,
)

__all__ = [
    "Backend",
    "BackendConfig",
    "Branch",
    "FINISH_CANCELLED",
    "FINISH_EOS",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "ModelInfo",
    "StepStats",
    "TokenEvent",
    "default_threads",
    "plain_chain",
]
