"""The engine and the state token in process: rows leave within a step, the prefix cache keeps its bound, tokens round-trip and
refuse what is not theirs, batch invariance is measured, /health says loading and shutting
down."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from toolkit.runtime import load
from toolkit.runtime.decode import DecodeOptions
from toolkit.runtime.step import batch_invariant
from toolkit.serve.api import Server, create_app
from toolkit.serve.engine import Engine
from toolkit.serve.model import ServedModel, ServeLimits
from toolkit.serve.prefix_cache import PrefixCache
from toolkit.serve.request import Event, Request
from toolkit.serve.state_token import StateCodec, StateTokenError, StreamState

MODEL = Path(__file__).resolve().parents[2] / "exported" / "shakespeare"


def test_prefix_cache_is_lru_within_its_bytes() -> None:
    h = np.zeros((1, 512), np.float32)
    logits = np.zeros(65, np.float32)
    one = 8 * 3 + 2 * h.nbytes + logits.nbytes + 200
    cache = PrefixCache(3 * one)
    for key in ((1, 2, 3), (4, 5, 6), (7, 8, 9)):
        cache.put(key, h, h, logits)
    assert cache.get((1, 2, 3)) is not None  # now the most recent
    cache.put((10, 11, 12), h, h, logits)
    assert cache.get((4, 5, 6)) is None and cache.get((1, 2, 3)) is not None
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes


def test_state_token_round_trip_and_refusals() -> None:
    rng = np.random.default_rng(4)
    rng.random(17)
    state = StreamState(
        np.tanh(rng.standard_normal((2, 8))).astype(np.float32),  # h is a tanh
        rng.standard_normal((2, 8)).astype(np.float32),
        rng.standard_normal(5).astype(np.float32),
        rng.bit_generator.state,
    )
    codec = StateCodec("ab" * 32, 2, 8, 5)
    back = codec.decode(codec.encode(state))
    assert np.array_equal(back.h, state.h) and np.array_equal(back.c, state.c)
    assert np.array_equal(back.logits, state.logits)
    assert back.rng_state == state.rng_state
    token = codec.encode(state)
    assert len(token) == codec.token_chars
    cases = {
        token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB"): "integrity",
        StateCodec("cd" * 32, 2, 8, 5).encode(state): "another model",
        token + "A" * 10: "characters",
        "cls1.!!!!": "base64",
        "nope": "not a state token",
    }
    for bad, fragment in cases.items():
        with pytest.raises(StateTokenError, match=fragment):
            codec.decode(bad)
    # Numbers no step makes: NaN, infinities, 3e38 (a made-up token, correctly signed).
    for name, value, fragment in [
        ("h", np.nan, "not finite"),
        ("c", np.inf, "not finite"),
        ("logits", -np.inf, "not finite"),
        ("logits", 3e38, "outside"),
        ("h", 1.5, "outside"),
    ]:
        arrays = {"h": state.h.copy(), "c": state.c.copy(), "logits": state.logits.copy()}
        arrays[name].flat[3] = value
        forged = StreamState(arrays["h"], arrays["c"], arrays["logits"], state.rng_state)
        with pytest.raises(StateTokenError, match=fragment):
            codec.decode(codec.encode(forged))
    # A secret makes another server's tokens (same model, no secret) fail the check.
    with pytest.raises(StateTokenError, match="integrity"):
        StateCodec("ab" * 32, 2, 8, 5, secret="s3cret").decode(token)


def test_batch_invariance_is_measured() -> None:
    fp32 = load(MODEL, runtime="onnx", variant="fp32")
    int8 = load(MODEL, runtime="onnx", variant="int8")
    shape = (fp32.layers, fp32.units)
    assert batch_invariant(fp32.backend, shape, 65) is True
    assert batch_invariant(int8.backend, shape, 65) is False  # one activation scale per batch


def test_a_cancelled_request_leaves_before_the_next_step() -> None:
    generator = load(MODEL, runtime="onnx")
    engine = Engine(generator.backend, generator.vocab, (generator.layers, generator.units))
    events: list[Event] = []
    steps: list[int] = []
    engine.on_step = steps.append
    request = Request(
        [generator.vocab.index[c] for c in "ROMEO:"],
        options=DecodeOptions(length=100_000, temperature=1.0),
        deliver=lambda r, batch: events.extend(batch),
    )
    engine.start()
    try:
        engine.submit(request)
        deadline = time.monotonic() + 10
        while len(steps) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        engine.cancel(request)
        taken = len(steps)
        while request.finished_at is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert len(steps) - taken <= 1  # at most the step under way when it was cancelled
        assert events[-1].finish_reason == "cancelled"
        assert not engine.rows and not engine.running
    finally:
        engine.close()


def test_health_is_503_while_loading_and_shutting_down() -> None:
    model = ServedModel(MODEL)
    server = Server(model, ServeLimits())
    client = TestClient(create_app(server))
    assert client.get("/health").status_code == 503  # not loaded yet
    response = client.post("/v1/completions", json={"prompt": "A"})
    assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
    server.load(on_error=lambda message: None)
    assert server.loaded.wait(30)
    assert client.get("/health").json() == {"status": "ok"}
    server.begin_shutdown(timeout_s=0)
    assert client.get("/health").status_code == 503
    assert client.post("/v1/completions", json={"prompt": "A"}).status_code == 503
    server.close()


def test_a_lone_stream_keeps_its_text_when_others_join_and_leave() -> None:
    """Alone, a stream draws with the decoder's batch-1 path (uniforms drawn ahead); when
    another joins, the batch draw takes over from the same random stream, and back."""
    generator = load(MODEL, runtime="onnx")
    engine = Engine(generator.backend, generator.vocab, (generator.layers, generator.units))
    texts: dict[int, str] = {}

    def request(prompt: str, length: int, seed: int) -> Request:
        def deliver(r: Request, events: list[Event]) -> None:
            texts[seed] = texts.get(seed, "") + "".join(e.text for e in events)

        ids = [generator.vocab.index[c] for c in prompt]
        options = DecodeOptions(length=length, temperature=0.9, seed=seed)
        return Request(ids, options, deliver=deliver)

    lone, joiner = request("ROMEO:", 600, 1), request("JULIET:", 120, 2)
    engine.submit(lone)
    while engine.stats.steps < 200:
        engine.iterate()
    engine.submit(joiner)  # joins mid-stream and leaves before the lone one ends
    while engine.rows or engine.waiting:
        engine.iterate()
    engine.flush()
    for seed, (prompt, length) in {1: ("ROMEO:", 600), 2: ("JULIET:", 120)}.items():
        expected = generator.generate(prompt, length=length, temperature=0.9, seed=seed)
        assert texts[seed] == expected.texts[0]


def test_each_request_gets_its_text_at_its_own_interval_and_first_characters_at_once() -> None:
    """A request's first character goes out in the step that draws it; after that its text
    goes out when its own interval (20 ms for two streams) has passed since its last
    hand-over, so requests that started apart are handed over on different steps."""
    generator = load(MODEL, runtime="onnx")
    engine = Engine(generator.backend, generator.vocab, (generator.layers, generator.units))
    now = [0.0]
    engine.clock = lambda: now[0]
    got: dict[int, list[int]] = {1: [], 2: []}  # characters per hand-over

    def deliver(r: Request, events: list[Event]) -> None:
        assert r.seed is not None
        got[r.seed].append(sum(len(e.text) for e in events))

    def request(seed: int) -> Request:
        ids = [generator.vocab.index[c] for c in "ROMEO:"]
        return Request(ids, DecodeOptions(length=100, temperature=0.9, seed=seed), deliver=deliver)

    engine.submit(request(1))
    while engine.stats.chars < 1:  # its prompt, then its first character
        engine.iterate()
    assert got[1] == [1]
    for _ in range(4):  # characters 2-5: its interval has not passed
        engine.iterate()
    assert got[1] == [1]
    now[0] = 0.005
    engine.submit(request(2))  # joins from the prefix cache and draws at once
    engine.iterate()
    assert got == {1: [1], 2: [1]}
    now[0] = 0.021  # the first's interval has passed, the second's not
    engine.iterate()
    assert got == {1: [1, 6], 2: [1]}
    now[0] = 0.026
    engine.iterate()
    assert got == {1: [1, 6], 2: [1, 2]}


def test_stop_strings_end_a_stream_and_are_never_sent() -> None:
    """Several stop strings per request (overlapping ones, one with a character outside the
    vocabulary), flushed after every step: what is sent is the text up to where the first
    stop string ends, without it; characters that may start one are held back meanwhile."""
    generator = load(MODEL, runtime="onnx")
    engine = Engine(generator.backend, generator.vocab, (generator.layers, generator.units))
    cases = {
        1: ("\n\n", "e\n"),
        2: ("the", "he ", "e"),
        3: ("Ω:", "ing", "in"),
        4: ("aa", "a"),
        5: (":\nI",),
    }
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}

    def deliver(r: Request, events: list[Event]) -> None:
        assert r.seed is not None
        texts[r.seed] = texts.get(r.seed, "") + "".join(e.text for e in events)
        reasons[r.seed] = events[-1].finish_reason or reasons.get(r.seed)

    ids = [generator.vocab.index[c] for c in "ROMEO:"]
    for seed, stops in cases.items():
        options = DecodeOptions(length=300, temperature=0.9, stop=stops, seed=seed)
        engine.submit(Request(ids, options, deliver=deliver))
    while engine.rows or engine.waiting:
        engine.iterate()
        engine.flush()
    for seed, stops in cases.items():
        whole = generator.generate("ROMEO:", length=300, temperature=0.9, seed=seed).texts[0]
        ends = [
            (e, k)
            for e in range(1, len(whole) + 1)
            for k, s in enumerate(stops)
            if whole[:e].endswith(s)
        ]
        if ends:
            end, k = min(ends)
            assert texts[seed] == whole[: end - len(stops[k])] and reasons[seed] == "stop"
        else:
            assert texts[seed] == whole and reasons[seed] == "length"
