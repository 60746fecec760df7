"""Chat prompts from the model's own ``tokenizer.chat_template`` (Jinja, sandboxed)."""

from __future__ import annotations

from collections.abc import Sequence

import jinja2

from engine.errors import InvalidRequestError

PLAIN_TEMPLATE_WARNING = (
    "This model has no chat template (tokenizer.chat_template); Ponder uses a plain "
    "'User:/Assistant:' prompt, which may suit it poorly."
)

_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}


def render_plain(messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The fallback for models without a template: ``Role: text`` blocks separated by blank lines."""
    parts = [f"{_ROLES.get(m['role'], m['role'].title())}: {m['content']}" for m in messages]
    text = "\n\n".join(parts)
    if add_generation_prompt:
        text += "\n\nAssistant:"
    return text


def _check(messages: Sequence[dict[str, str]]) -> None:
    if not messages:
        raise InvalidRequestError("A chat needs at least one message.")
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InvalidRequestError("Each chat message needs a 'role' and a 'content'.")


def render_chat(
    template: str | None,
    messages: Sequence[dict[str, str]],
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    **variables: object,
) -> tuple[str, str | None]:
    """(prompt text, warning or None). A template that fails to render falls back to the plain
    format with a warning naming the error, rather than failing the run. ``variables``: the
    template's own switches (``enable_thinking=False``)."""
    _check(messages)
    if not template:
        return render_plain(messages, add_generation_prompt), PLAIN_TEMPLATE_WARNING
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    try:
        fmt = Jinja2ChatFormatter(
            template, eos_token=eos_token, bos_token=bos_token, add_generation_prompt=add_generation_prompt
        )
        return fmt(messages=list(messages), **variables).prompt, None  # type: ignore[arg-type]  # plain dicts, switches: Jinja takes both
    except (jinja2.TemplateError, ValueError, TypeError) as e:
        warning = f"The model's chat template failed to render ({e}); using a plain prompt instead."
        return render_plain(messages, add_generation_prompt), warning


def chat_prompt(
    template: str | None,
    messages: Sequence[dict[str, str]],
    bos_token: str,
    eos_token: str,
    **variables: object,
) -> tuple[str, bool, str | None]:
    """A chat prompt as every path renders it (in process, on llama-server, with a local tokenizer):
    (its text with the generation prompt, whether the tokenizer should add BOS: only when the
    template did not write it, the template's warning or None)."""
    text, warning = render_chat(
        template, messages, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=True, **variables
    )
    return text, not (bos_token and text.startswith(bos_token)), warning
