"""What Ponder knows about each kind of PRM, in one place.

A PRM kind is one module in ``engine/prm/kinds/`` that registers a :class:`PRMKind`: what ``--prm``
calls it (or which specs it takes: a PRM GGUF file), how its spec is checked before anything loads,
which executors serve it (in process, on a server; each builds the PRM from what its executor
offers, :class:`InProcessHost` or :class:`ServerHost`), its prompt format where it reads a model, what
a run records of it, its share of the time a compare costs, and how the app lists it. Nothing else
in Ponder names a PRM kind: adding one is one module in ``kinds/`` plus its test.

The executors offer mechanisms, not kinds: the policy model as judge and a PRM GGUF read at verdict
tokens in process; a verdict read from the top logprobs of one token and a classification head's
pooling on a server. A kind picks the mechanism and gives it its :mod:`~engine.prm.formats` value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.errors import InvalidRequestError
from engine.executor import PRM
from engine.modules import import_all
from engine.prm.formats import HeadFormat, VerdictFormat


@dataclass(frozen=True)
class Where:
    """Where a PRM is asked for: over servers (``servers``), with a PRM server of its own
    (``prm_server``); ``must_exist``: a file it names must be there already (the CLI checks before
    anything loads)."""

    servers: bool = False
    prm_server: bool = False
    must_exist: bool = False


class InProcessHost(Protocol):
    """What the in-process executor offers a PRM kind."""

    def judge(self) -> PRM:
        """The policy model as judge (sharing the KV cells it computed for the solutions)."""
        ...

    def token_prm(self, path: Path, fmt: VerdictFormat, name: str) -> PRM:
        """A PRM GGUF loaded in a backend of its own, read at ``fmt``'s verdict tokens."""
        ...


class ServerHost(Protocol):
    """What the server executor offers a PRM kind: the PRM runs on the PRM server when one was
    given, else on the policy's servers."""

    @property
    def prm_model(self) -> Path:
        """The model the PRM's server serves (its path or served name), for the catalog."""
        ...

    def verdict_prm(self, fmt: VerdictFormat, name: str) -> PRM:
        """A PRM read from the top logprobs of one token after each step's prefix."""
        ...

    def head_prm(self, fmt: HeadFormat, name: str | None = None) -> PRM:
        """A classification-head PRM on the pooling API (vLLM)."""
        ...


Build = Callable[..., PRM]  # (host, spec, reference) -> the PRM


@dataclass(frozen=True)
class PRMKind:
    """Everything about one kind of PRM (see the module docstring)."""

    name: str  # what --prm says; for a kind that takes other specs (a file), its own name
    label: str  # for people, in the app's PRM list
    summary: str  # one line for help and tooltips
    in_process: Callable[[InProcessHost, str, str | None], PRM] | None = None
    on_server: Callable[[ServerHost, str, str | None], PRM] | None = None
    check: Callable[[str, Where], None] | None = None  # refuses a spec where it cannot run
    takes: Callable[[str], bool] | None = None  # specs other than its name it takes (a path)
    format: VerdictFormat | HeadFormat | None = None  # how it reads a model's output
    runs_model: bool = True  # False: no model (its FLOPs and tokens are 0, one PRM serves every run)
    needs_reference: bool = False  # scores against the problem's known answer
    time_share: float = 0.3  # extra time it takes, as a share of generation (the cost estimate)
    listed: bool = False  # among the app's built-in scorers (others come from files and servers)
    default: bool = False  # what --prm is when not given (one kind says so)
    pools: bool = False  # a classification head: the kind a PRM server that only pools serves
    order: int = 100  # place in lists

    def build_in_process(self, host: InProcessHost, spec: str, reference: str | None) -> PRM:
        if self.in_process is None:
            raise InvalidRequestError(f"--prm {spec} does not run in process.")
        return self.in_process(host, spec, reference)

    def build_on_server(self, host: ServerHost, spec: str, reference: str | None) -> PRM:
        if self.on_server is None:
            raise InvalidRequestError(f"--prm {spec} does not run on a server.")
        return self.on_server(host, spec, reference)

    def record(self, prm: PRM, spec: str) -> dict[str, object]:
        """What a run records about its PRM: name, spec, kind, its model where it has one, and the
        parameters its FLOPs are counted with (0 for a PRM that runs no model)."""
        info: dict[str, object] = {
            "name": getattr(prm, "name", None) or spec,
            "spec": spec,
            "kind": self.name,
        }
        model = getattr(prm, "model_record", None)
        if model:
            info["model"] = model
        info["n_params"] = int(getattr(prm, "n_params", 0) or 0)
        return info


_REGISTRY: dict[str, PRMKind] = {}
_loaded = False


def register(kind: PRMKind) -> PRMKind:
    """Add (or replace) a PRM kind. Called by the kind's own module."""
    if not kind.name or "@" in kind.name:
        raise ValueError(f"a PRM kind's name is a word without '@', not {kind.name!r}")
    if kind.in_process is None and kind.on_server is None:
        raise ValueError(f"PRM kind {kind.name} runs nowhere: give in_process or on_server")
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def load() -> None:
    """Import every module of ``engine/prm/kinds``; each registers itself."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    # engine.prm.kinds, beside this module (named, not imported: engine.prm imports this module)
    import_all(Path(__file__).parent / "kinds", __name__.rsplit(".", 1)[0] + ".kinds")


def kinds() -> list[PRMKind]:
    """Every registered kind, in display order."""
    load()
    return sorted(_REGISTRY.values(), key=lambda k: (k.order, k.name))


def names() -> list[str]:
    """What ``--prm`` takes by name (a kind that takes files aside)."""
    return [k.name for k in kinds() if k.takes is None]


def listed() -> list[PRMKind]:
    """The built-in scorers the app lists, in order."""
    return [k for k in kinds() if k.listed]


def formats(shape: type[VerdictFormat] | type[HeadFormat] = VerdictFormat) -> list[str]:
    """Names of the kinds that read a model in a format of ``shape``, served by a PRM server
    (a token PRM's formats, or a classification head's)."""
    return [k.name for k in kinds() if isinstance(k.format, shape) and k.takes is None and not k.listed]


def verdict_format(name: str) -> VerdictFormat:
    """The token-PRM format ``name`` (what a catalog entry's ``prm_format`` says)."""
    load()
    kind = _REGISTRY.get(name)
    if kind is None or name not in formats(VerdictFormat) or not isinstance(kind.format, VerdictFormat):
        raise InvalidRequestError(
            f"Unknown PRM format {name!r}; use one of {', '.join(formats(VerdictFormat))}."
        )
    return kind.format


def find(spec: str) -> PRMKind | None:
    """The kind ``spec`` names, or the first that takes it (a file); None if none does."""
    load()
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    return next((k for k in kinds() if k.takes is not None and k.takes(spec)), None)


def get(spec: str) -> PRMKind:
    kind = find(spec)
    if kind is None:
        raise InvalidRequestError(
            f"--prm must be one of {', '.join(names())} or a PRM GGUF file; got {spec!r}."
        )
    return kind


def check(spec: str, where: Where = Where()) -> PRMKind:
    """The kind of ``spec``, refused here (one line, before anything loads) where it cannot run."""
    kind = get(spec)
    if kind.check is not None:
        kind.check(spec, where)
    return kind


def resolve(spec: str, where: Where, pools_only: bool = False) -> PRMKind:
    """:func:`check`, then the kind that will score: a PRM server that answers only the pooling API
    (found by probing it) serves a classification head, whatever a model-reading ``--prm`` said."""
    kind = check(spec, where)
    if pools_only and kind.runs_model and not kind.pools:
        head = next((k for k in kinds() if k.pools), None)
        if head is not None:
            return head
    return kind


def default_name() -> str:
    """What ``--prm`` is when not given: the kind that says it is the default."""
    return next(k.name for k in kinds() if k.default)


def needs_reference(spec: str) -> bool:
    kind = find(spec)
    return kind is not None and kind.needs_reference


def runs_model(spec: str) -> bool:
    kind = find(spec)
    return kind is None or kind.runs_model


def time_share(spec: str) -> float:
    """Extra time the PRM ``spec`` takes, as a share of generation (0 for a spec no kind takes)."""
    kind = find(spec)
    return kind.time_share if kind is not None else 0.0


def head_kind() -> PRMKind | None:
    """The kind a PRM server that only pools serves (the app lists such servers as NAME@URL)."""
    return next((k for k in kinds() if k.pools), None)


__all__ = [
    "InProcessHost",
    "PRMKind",
    "ServerHost",
    "Where",
    "check",
    "default_name",
    "find",
    "formats",
    "get",
    "head_kind",
    "kinds",
    "listed",
    "load",
    "names",
    "needs_reference",
    "register",
    "resolve",
    "runs_model",
    "time_share",
    "unregister",
    "verdict_format",
]
