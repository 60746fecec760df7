"""Qwen2.5-Math-PRM (7B/72B): a classification head, which llama.cpp cannot run per step, served by
vLLM's pooling API; a candidate goes as one chat formatted as its model card says, and a step's score
is its tag's positive-class probability. Also the kind of any PRM server that only pools."""

from __future__ import annotations

from engine.errors import InvalidRequestError
from engine.executor import PRM
from engine.prm.formats import HeadFormat
from engine.prm.registry import PRMKind, ServerHost, Where, register

FORMAT = HeadFormat(
    "qwen-prm",
    system_prompt="Please reason step by step, and put your final answer within \\boxed{}.",
    step_tag="<extra_0>",
)


def _check(spec: str, where: Where) -> None:
    if not where.prm_server:
        raise InvalidRequestError(
            f"--prm {spec} is a PRM with a classification head, served by vLLM (vllm serve "
            "Qwen/Qwen2.5-Math-PRM-7B): give --prm-server URL."
        )


def _on_server(host: ServerHost, spec: str, reference: str | None) -> PRM:
    return host.head_prm(FORMAT)


register(
    PRMKind(
        name=FORMAT.name,
        label=FORMAT.name,
        summary="a classification-head PRM on vLLM's pooling API (Qwen2.5-Math-PRM)",
        on_server=_on_server,
        check=_check,
        format=FORMAT,
        pools=True,
        order=60,
    )
)
