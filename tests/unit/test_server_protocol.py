"""Server faults a real llama-server will not produce on demand, against a small HTTP stub:
refused keys, 429 and 5xx with Retry-After, malformed and truncated answers. Each ends in one clear
error that names the server (never a traceback), after bounded retries where a retry can help."""

from __future__ import annotations

import time

import pytest
from server_stub import Stub, js

from engine.backends.server.client import ServerClient
from engine.backends.server.pool import LoopThread, ServerPool
from engine.backends.server.wire import CompletionRequest, ServerError, split_url

GOOD = {
    "content": "4",
    "tokens": [52],
    "stop_type": "eos",
    "completion_probabilities": [
        {"id": 52, "token": "4", "bytes": [52], "logprob": -0.1, "top_logprobs": []}
    ],
    "timings": {"prompt_n": 3, "cache_n": 0},
}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``ponder ARGS`` in this process (a unit test starts none): its exit status and stderr."""
    from engine.cli import main

    capsys.readouterr()
    status = main(list(args))
    return status, capsys.readouterr().err


@pytest.fixture
def loop():
    lt = LoopThread()
    yield lt
    lt.close()


def _client(loop: LoopThread, url: str, **kw) -> ServerClient:
    c = ServerClient(url, backoff=0.05, **kw)
    loop.run(c.probe())
    return c


def test_urls_lose_their_credentials_and_api_suffix():
    assert split_url("http://user:s3cret@host:8080/v1/") == ("http://host:8080", "s3cret")
    assert split_url("localhost:9000") == ("http://localhost:9000", None)
    assert split_url("https://api.example.com/") == ("https://api.example.com", None)
    with pytest.raises(Exception, match="not a server address"):
        split_url("ftp://host")
    c = ServerClient("http://u:topsecret@127.0.0.1:1")
    assert "topsecret" not in repr(c) and "topsecret" not in c.url


def test_a_refused_key_is_one_clear_error_before_anything_runs(loop, capsys):
    with Stub(key="right") as stub:
        with pytest.raises(ServerError, match="refused the API key") as e:
            ServerPool.connect([stub.url], api_key="wrong", loop=loop)
        assert stub.url in str(e.value) and "wrong" not in str(e.value)
        with pytest.raises(ServerError, match="needs an API key"):
            ServerPool.connect([stub.url], loop=loop)
        pool = ServerPool.connect([stub.url], api_key="right", loop=loop)
        assert pool.info.model == "stub.gguf" and pool.info.slots == 2
        # The command line's own entry (in this process: tests/unit starts none): exit status 2, one
        # line on stderr, the key nowhere in it.
        from engine.cli import main

        capsys.readouterr()
        status = main(
            [
                "compare",
                "What is 2+2?",
                "--server",
                stub.url,
                "--api-key",
                "wrong-key-123",
                "--prm",
                "arithmetic",
            ]
        )
        out, err = capsys.readouterr()
        assert status == 2, err
        assert "refused the API key" in err and "wrong-key-123" not in err + out
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_429_and_5xx_are_retried_honouring_retry_after(loop):
    with Stub() as stub:
        answers = [js({"error": {"message": "busy"}}, 429, {"Retry-After": "1"}), js({}, 503), js(GOOD)]
        stub.routes[("POST", "/completion")] = lambda b: answers.pop(0)
        c = _client(loop, stub.url)
        t0 = time.monotonic()
        out = loop.run(c.complete(CompletionRequest((1, 2, 3), 4)))
        assert time.monotonic() - t0 >= 1.0  # the server asked for a second's pause
        assert out.ids == [52] and out.text == "4" and out.finish == "eos" and out.prompt_n == 3
        assert sum(1 for m, p, _ in stub.calls if p == "/completion") == 3


def test_a_server_that_keeps_failing_gives_up_with_its_message(loop):
    with Stub() as stub:
        stub.routes[("POST", "/completion")] = lambda b: js({"error": {"message": "out of memory"}}, 500)
        c = _client(loop, stub.url, retries=2)
        with pytest.raises(ServerError) as e:
            loop.run(c.complete(CompletionRequest((1,), 4)))
        assert str(e.value).startswith(stub.url) and "HTTP 500 after 3 tries: out of memory" in str(e.value)
        assert sum(1 for m, p, _ in stub.calls if p == "/completion") == 3
        # A client error is not retried: it says what the server said.
        stub.routes[("POST", "/completion")] = lambda b: js(
            {"error": {"message": "the request exceeds the available context size"}}, 400
        )
        n = len(stub.calls)
        with pytest.raises(ServerError, match="exceeds the available context size"):
            loop.run(c.complete(CompletionRequest((1,), 4)))
        assert len(stub.calls) == n + 1


@pytest.mark.parametrize(
    "reply, message",
    [
        ((200, {"Content-Type": "application/json"}, b"<html>oops</html>"), "not JSON"),
        (js({"content": "4"}), "without tokens"),
        (js({"tokens": "nope"}), "without tokens"),
        (
            (200, {"Content-Type": "application/json", "X-Stub-Truncate": "1"}, b'{"content": "4", "tok'),
            "dropped the connection|not JSON",
        ),
    ],
)
def test_malformed_or_truncated_answers_name_the_server(loop, reply, message):
    with Stub() as stub:
        stub.routes[("POST", "/completion")] = lambda b: reply
        c = _client(loop, stub.url, retries=1)
        with pytest.raises(ServerError, match=message) as e:
            loop.run(c.complete(CompletionRequest((1,), 4)))
        assert stub.url in str(e.value)


def test_an_unreachable_server_or_a_missing_model_is_one_line(loop, tmp_path, capsys):
    from engine.backends.server.launch import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerError, match="cannot connect"):
        ServerPool.connect([dead], loop=loop)
    with Stub() as stub:
        with pytest.raises(ServerError, match="has no model 'other'; it serves: stub.gguf"):
            ServerPool.connect([stub.url], model="other", loop=loop)
    db = tmp_path / "s.db"
    status, err = _cli(capsys, "compare", "What is 2+2?", "--server", dead, "--db", str(db))
    assert status == 2 and "cannot connect" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    if db.exists():  # nothing ran, so nothing was saved
        from engine.store import Store

        with Store.open(db, readonly=True) as store:
            assert store.list_sessions() == []
