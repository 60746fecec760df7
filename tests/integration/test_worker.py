"""One thread owns the context; work is submitted to it and can be cancelled from anywhere."""

from __future__ import annotations

import threading
import time

import pytest

from engine.backends.llama_cpp import BackendConfig
from engine.errors import NotAGGUFError
from engine.run.opening import backend_worker
from engine.sampling import SamplingParams
from engine.worker import CancelToken, WorkerClosedError


def test_work_runs_in_the_owning_thread_and_cancels_from_another(model_path):
    with backend_worker(model_path, BackendConfig(n_ctx=4096, n_seq_max=16)) as w:
        info = w.wait_loaded(timeout=60).info
        assert info.architecture == "llama"
        names = w.call(lambda b: threading.current_thread().name)
        assert names == "ponder-backend"
        cancel = CancelToken()
        progress = []

        def work(b):
            prompt = b.chat_tokens([{"role": "user", "content": "Write a long essay about rivers."}])
            p = SamplingParams(max_tokens=2000, ignore_eos=True)
            return b.sample_n(prompt, 8, p, cancel=cancel, on_step=lambda ev: progress.append(len(ev)))

        fut = w.submit(work)
        while len(progress) < 3:
            time.sleep(0.01)
        cancel.cancel()
        t0 = time.monotonic()
        kids = fut.result(timeout=30)
        assert time.monotonic() - t0 < 2.0
        assert all(k.finish_reason == "cancelled" for k in kids)
        assert all(k.n_generated < 2000 for k in kids)
        # The same worker keeps serving.
        assert w.call(lambda b: len(b.tokenize("hello world"))) >= 2


def test_load_errors_reach_the_caller(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_text("nope")
    w = backend_worker(p)
    with pytest.raises(NotAGGUFError):
        w.wait_loaded(timeout=30)
    with pytest.raises(NotAGGUFError):
        w.submit(lambda b: 1).result(timeout=30)
    w.close()
    with pytest.raises(WorkerClosedError):
        w.submit(lambda b: 1)


def test_errors_in_work_do_not_kill_the_worker(model_path):
    with backend_worker(model_path, BackendConfig(n_ctx=512, n_seq_max=2, n_batch=64)) as w:
        with pytest.raises(ZeroDivisionError):
            w.call(lambda b: 1 / 0)
        assert w.call(lambda b: b.n_ctx) == 512
