"""The vectorised temperature sampler draws from softmax(logits / T), exactly and reproducibly."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from engine.fastsample import logsumexp_rows, sample_rows
from engine.sampling import SamplingParams


def exact_probs(row: np.ndarray, t: float) -> np.ndarray:
    z = row.astype(np.float64) / t
    z -= z.max()
    p = np.exp(z)
    return p / p.sum()


def test_inverse_cdf_lands_on_the_exact_token():
    """For a uniform u, the token is the first whose cumulative probability exceeds u."""
    rng = np.random.default_rng(0)
    row = (rng.standard_normal(5000) * 4).astype(np.float32)  # not a multiple of the block size
    for t in (0.5, 0.8, 1.3):
        cdf = np.cumsum(exact_probs(row, t))
        for u in rng.random(300):
            expect = int(np.searchsorted(cdf, u, side="right"))
            got = sample_rows(row[None, :].copy(), [t], [u])[0]
            # float32 vs float64 cumulative sums may differ at a boundary by one token of mass ~0
            assert got == expect or abs(cdf[min(got, expect)] - u) < 1e-5


def test_frequencies_follow_the_softmax_on_a_real_logits_row(fresh):
    prompt = fresh.chat_tokens([{"role": "user", "content": "Pick a random fruit."}])
    (k,) = fresh.sample_n(prompt, 1, SamplingParams(temperature=0.0, max_tokens=1))
    # The model's logits row after the prompt, as the sampler sees it.
    root = fresh.root(prompt)
    fresh.prefill([root])
    ptr = llama_cpp.llama_get_logits_ith(fresh._ctx, root._logits[1])
    row = np.ctypeslib.as_array(ptr, shape=(fresh.n_vocab,)).copy()
    fresh.free(root)
    t = 0.8
    p = exact_probs(row, t)
    n = 20_000
    draws = sample_rows(np.repeat(row[None, :], n, axis=0), [t] * n, np.random.default_rng(1).random(n))
    counts = np.bincount(draws, minlength=fresh.n_vocab)
    top = np.argsort(p)[::-1][:5]
    for tok in top:
        sd = np.sqrt(n * p[tok] * (1 - p[tok]))
        assert abs(counts[tok] - n * p[tok]) < 5 * sd + 3, (tok, counts[tok], n * p[tok])
    assert counts[np.argmax(p)] > 0
    assert k.tokens[-1] == int(np.argmax(row))  # greedy agrees with the row


def test_banned_tokens_are_never_drawn():
    row = np.zeros((1, 1000), dtype=np.float32)
    row[0, 7] = 50.0  # nearly all mass on a banned token
    ban = np.array([7])
    for u in np.linspace(0, 0.999, 50):
        assert sample_rows(row.copy(), [1.0], [u], [ban])[0] != 7


def test_logsumexp_matches_float64():
    rng = np.random.default_rng(3)
    rows = (rng.standard_normal((4, 3000)) * 10).astype(np.float32)
    ref = np.log(np.exp(rows.astype(np.float64)).sum(axis=1))
    np.testing.assert_allclose(logsumexp_rows(rows), ref, rtol=1e-5)


@pytest.mark.parametrize("kw", [{"top_k": 40}, {"top_p": 0.9}, {"min_p": 0.05}, {"temperature": 0.0}])
def test_truncating_chains_use_llama_cpp_samplers(fresh, kw):
    """Other chains go through llama.cpp's sampler chain, and stay reproducible."""
    prompt = fresh.chat_tokens([{"role": "user", "content": "Write a haiku."}])
    a = fresh.sample_n(prompt, 2, SamplingParams(seed=4, max_tokens=16, **kw), keep=True)
    assert all(x._rng is None and x._sampler for x in a)
    for x in a:
        fresh.free(x)
    b = fresh.sample_n(prompt, 2, SamplingParams(seed=4, max_tokens=16, **kw))
    assert [x.text for x in a] == [x.text for x in b]
