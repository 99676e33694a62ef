"""The response cache: keys that tell requests apart, round trips, durability, concurrent writers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest

from llama2.errors import DataError
from llama2.evaluate.cache import ResponseCache, is_random_draw, request_key
from llama2.providers.base import Completion, GenerateRequest, Loglikelihood, LoglikelihoodRequest
from llama2.types import SamplingParams

GREEDY = SamplingParams(temperature=0, max_new_tokens=16)


def test_keys_tell_identity_kind_and_params_apart():
    text = GenerateRequest("2+2=", GREEDY)
    keys = {
        request_key("local:a@1234", text),
        request_key("local:a@5678", text),  # same spec, retrained weights
        request_key("local:a@1234", GenerateRequest("2+2=", SamplingParams(temperature=0, max_new_tokens=17))),
        request_key("local:a@1234", GenerateRequest("2+2=", SamplingParams(temperature=0, max_new_tokens=16, stop=("\n",)))),
        request_key("local:a@1234", GenerateRequest("2+2=", SamplingParams(temperature=0.5, max_new_tokens=16, seed=1))),
        request_key("local:a@1234", GenerateRequest([{"role": "user", "content": "2+2="}], GREEDY)),
        request_key("local:a@1234", LoglikelihoodRequest("2+2=", " 4")),
        request_key("local:a@1234", LoglikelihoodRequest("2+2= ", "4")),
        request_key("local:a@1234", text, draw="task\x1fs0\x1f0"),
    }
    assert len(keys) == 9


def test_equal_requests_get_equal_keys():
    a = GenerateRequest("hi", SamplingParams(temperature=0, top_p=1))
    b = GenerateRequest("hi", SamplingParams(temperature=0.0, top_p=1.0))
    chat = [{"role": "user", "content": "hi"}]
    reordered = [{"content": "hi", "role": "user"}]
    assert request_key("m", a) == request_key("m", b)
    assert request_key("m", GenerateRequest(chat)) == request_key("m", GenerateRequest(reordered))
    assert len(request_key("m", a)) == 64


def test_random_draws_are_sampled_unseeded_generations():
    assert is_random_draw(GenerateRequest("x", SamplingParams(temperature=0.7)))
    assert not is_random_draw(GenerateRequest("x", SamplingParams(temperature=0.7, seed=3)))
    assert not is_random_draw(GenerateRequest("x", SamplingParams(temperature=0)))
    assert not is_random_draw(LoglikelihoodRequest("x", "y"))


def test_round_trip_survives_reopening(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    completion = Completion("4", "stop", 3, 1, latency_s=0.25, cost_usd=0.001, logprobs=[-0.1])
    scored = Loglikelihood(-1.5, True)
    generate, score = GenerateRequest("2+2=", GREEDY), LoglikelihoodRequest("2+2=", " 4")
    with ResponseCache(path) as cache:
        cache.put_many("m", [("k1", generate, completion), ("k2", score, scored)])
        assert cache.get_many(["k1", "k2", "missing"]) == {"k1": completion, "k2": scored}
    with ResponseCache(path) as cache:
        assert len(cache) == 2
        assert cache.get_many(["k2"]) == {"k2": scored}
        assert cache.get_many([]) == {}


def test_wal_mode_and_many_keys(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        entries = [(f"k{i}", LoglikelihoodRequest("c", str(i)), Loglikelihood(-float(i), False)) for i in range(2_000)]
        cache.put_many("m", entries)
        found = cache.get_many([f"k{i}" for i in range(2_100)])  # more keys than one SELECT takes
        assert len(found) == 2_000 and found["k1999"].logprob == -1999.0
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_concurrent_coroutines_and_threads_share_one_cache(tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")

    async def writer(worker: int):
        for batch in range(10):
            await asyncio.sleep(0)  # interleave with the other writers between batches
            cache.put_many("m", [(f"w{worker}-{batch}-{i}", LoglikelihoodRequest("c", "x"), Loglikelihood(-1.0, False))
                                 for i in range(5)])
            assert f"w{worker}-{batch}-0" in cache.get_many([f"w{worker}-{batch}-0"])

    async def main():
        await asyncio.gather(*(writer(w) for w in range(8)))

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    asyncio.run(main())
    for thread in threads:
        thread.join()
    assert len(cache) == 8 * 10 * 5  # the threads wrote the same keys: replaced, not duplicated
    cache.close()


def test_a_file_that_is_not_a_cache_is_a_data_error(tmp_path):
    bad = tmp_path / "cache.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="cache.sqlite: not a usable evaluation cache"):
        ResponseCache(bad)


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(DataError, match="schema 99"):
        ResponseCache(path)
