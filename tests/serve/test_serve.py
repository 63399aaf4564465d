"""`toolkit serve` against a real server process on 127.0.0.1, with the `openai` client and
httpx: the same text as `toolkit generate` (greedy, seeded, n, stream or not, alone or among
32), continuing from a state token, cancel, every bad input, limits, shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from toolkit.runtime import Generator, load
from toolkit.serve.process import ServerProcess
from toolkit.serve.process import start_server as start

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "exported" / "shakespeare"
KEY = "test-key"


def start_server(*args: str) -> ServerProcess:
    return start(MODEL, *args)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    running = start_server("--max-batch", "64", "--cache-mb", "1")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def generator() -> Generator:
    return load(MODEL, runtime="onnx")


def reference(generator: Generator, prompt: str, length: int, **options: Any) -> list[str]:
    """What `toolkit generate` prints for these options (the same library call)."""
    return generator.generate(prompt, length=length, **options).texts


# --------------------------------------------------------------------------- same text


def test_greedy_equals_toolkit_generate(client: openai.OpenAI) -> None:
    command = ["generate", str(MODEL), "--prompt", "ROMEO:", "--length", "120"]
    proc = subprocess.run(
        [sys.executable, "-m", "toolkit", *command, "--temperature", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected = json.loads(proc.stdout)["texts"][0]
    answer = client.completions.create(
        model="shakespeare", prompt="ROMEO:", max_tokens=120, temperature=0
    )
    assert answer.choices[0].text == expected
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 120)


def test_seeded_stream_equals_non_stream_equals_generate(
    client: openai.OpenAI, generator: Generator
) -> None:
    expected = reference(generator, "JULIET:", 300, temperature=0.9, seed=7, stop="\n\n")[0]
    plain = client.completions.create(
        model="shakespeare", prompt="JULIET:", max_tokens=300, temperature=0.9, seed=7, stop="\n\n"
    )
    chunks = list(
        client.completions.create(
            model="shakespeare",
            prompt="JULIET:",
            max_tokens=300,
            temperature=0.9,
            seed=7,
            stop="\n\n",
            stream=True,
        )
    )
    streamed = "".join(chunk.choices[0].text for chunk in chunks)
    assert plain.choices[0].text == streamed == expected
    assert "\n\n" not in streamed
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    # A long text comes in pieces as it is made, not at the end.
    long = client.completions.create(
        model="shakespeare", prompt="A", max_tokens=5000, temperature=1.0, stream=True
    )
    assert len(list(long)) >= 3


def test_top_k_top_p_echo_and_prompt_list(client: openai.OpenAI, generator: Generator) -> None:
    prompts = ["ROMEO:", "KING HENRY:"]
    answer = client.completions.create(
        model="shakespeare",
        prompt=prompts,
        max_tokens=80,
        temperature=0.7,
        top_p=0.9,
        seed=3,
        echo=True,
        extra_body={"top_k": 12},
    )
    for i, prompt in enumerate(prompts):
        expected = reference(generator, prompt, 80, temperature=0.7, top_k=12, top_p=0.9, seed=3)
        assert answer.choices[i].index == i
        assert answer.choices[i].text == prompt + expected[0]


def test_n_samples_equal_generate_num_samples(client: openai.OpenAI, generator: Generator) -> None:
    answer = client.completions.create(
        model="shakespeare", prompt="First Citizen:", max_tokens=100, temperature=1.0, seed=5, n=4
    )
    expected = reference(generator, "First Citizen:", 100, temperature=1.0, seed=5, num_samples=4)
    assert [c.text for c in sorted(answer.choices, key=lambda c: c.index)] == expected
    assert len(set(expected)) == 4


def test_32_concurrent_seeded_requests_equal_one_at_a_time(server: ServerProcess) -> None:
    bodies = [
        {
            "prompt": ["ROMEO:", "JULIET:", "", "MENENIUS:"][i % 4],
            "max_tokens": 60 + 7 * i,
            "temperature": [0.5, 0.9, 1.3, 0][i % 4],
            "seed": 100 + i,
            "stop": None if i % 3 else "\n",
            "stream": i % 2 == 0,
        }
        for i in range(32)
    ]

    async def one(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
        if not body["stream"]:
            response = await http.post("/completions", json=body)
            return str(response.json()["choices"][0]["text"])
        text = ""
        async with http.stream("POST", "/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["text"]
        return text

    async def run(concurrent: bool) -> list[str]:
        async with httpx.AsyncClient(base_url=server.v1, timeout=120) as http:
            if concurrent:
                return list(await asyncio.gather(*(one(http, b) for b in bodies)))
            return [await one(http, b) for b in bodies]

    together = asyncio.run(run(True))
    alone = asyncio.run(run(False))
    assert together == alone
    assert len(set(together)) > 20


def test_continue_from_state_equals_one_stream(client: openai.OpenAI, generator: Generator) -> None:
    whole = reference(generator, "ROMEO:", 150, temperature=0.8, seed=11)[0]
    first = client.completions.create(
        model="shakespeare",
        prompt="ROMEO:",
        max_tokens=90,
        temperature=0.8,
        seed=11,
        extra_body={"return_state": True},
    )
    token = first.choices[0].model_extra["state"]
    second = client.completions.create(
        model="shakespeare",
        prompt="",
        max_tokens=60,
        temperature=0.8,
        extra_body={"state": token},
    )
    assert first.choices[0].text + second.choices[0].text == whole
    # The prompt of a continuation is fed first, as a session's feed then sample.
    session = generator.session()
    session.feed("ROMEO:")
    rng = np.random.default_rng(11)
    head = session.sample(90, temperature=0.8, rng=rng)[0]
    session.feed("\nJULIET:")
    tail = session.sample(40, temperature=0.8, rng=rng)[0]
    third = client.completions.create(
        model="shakespeare",
        prompt="\nJULIET:",
        max_tokens=40,
        temperature=0.8,
        extra_body={"state": token},
    )
    assert head == first.choices[0].text and third.choices[0].text == tail


def test_prefix_cache_hits_give_the_same_text(server: ServerProcess) -> None:
    def hits() -> float:
        metrics = httpx.get(server.url + "/metrics").text
        line = next(x for x in metrics.splitlines() if x.startswith("toolkit_prefix_cache_hits"))
        return float(line.split()[-1])

    body = {"prompt": "DUKE VINCENTIO:\nThe", "max_tokens": 50, "temperature": 1.0, "seed": 9}
    before = hits()
    texts = [httpx.post(server.v1 + "/completions", json=body).json() for _ in range(2)]
    assert texts[0]["choices"] == texts[1]["choices"]
    assert hits() == before + 1


def test_cancelled_stream_frees_its_row(server: ServerProcess) -> None:
    body = {"prompt": "ROMEO:", "max_tokens": 100_000, "temperature": 1.0, "stream": True}
    with (
        httpx.Client(base_url=server.v1, timeout=30) as http,
        http.stream("POST", "/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk, then hang up
    deadline = time.monotonic() + 10
    while True:
        metrics = httpx.get(server.url + "/metrics").text
        if "toolkit_requests_running 0.0" in metrics:
            break
        assert time.monotonic() < deadline, "the cancelled stream kept its row"
        time.sleep(0.05)


def test_models_health_and_metrics(server: ServerProcess) -> None:
    models = httpx.get(server.v1 + "/models").json()
    card = models["data"][0]
    assert (card["id"], card["runtime"], card["variant"]) == ("shakespeare", "onnx", "fp32")
    assert card["batch_invariant"] is True
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    body = {"prompt": "ROMEO:", "max_tokens": 40, "n": 2, "temperature": 1.0}
    assert httpx.post(server.v1 + "/completions", json=body).status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    for histogram in ("time_to_first_char", "inter_char_latency", "request_latency", "queue_time"):
        assert values[f"toolkit_{histogram}_seconds_count"] >= 1, histogram
    assert values["toolkit_generated_chars_total"] >= 80
    assert values["toolkit_batch_size_count"] >= 40
    # At least a step per character of the 2 x 40 (they share steps), each timed: more than
    # nothing, less than the 0.1 s a step of this small model never takes.
    steps, seconds = values["toolkit_steps_total"], values["toolkit_step_seconds_total"]
    assert steps >= 40
    assert 0 < seconds < 0.1 * steps
    for name in (
        "toolkit_requests_running",
        "toolkit_requests_waiting",
        "toolkit_generated_chars_total",
        "toolkit_time_to_first_char_seconds",
        "toolkit_inter_char_latency_seconds",
        "toolkit_request_latency_seconds",
        "toolkit_queue_time_seconds",
        "toolkit_batch_size",
        "toolkit_prefix_cache_hits_total",
        "toolkit_steps_total",
        "toolkit_step_seconds_total",
    ):
        assert name in metrics, name


# --------------------------------------------------------------------------- bad input


def tampered(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"prompt": "Caf\u00e9 \u20ac"}, 422, "'\u00e9', '\u20ac'"),
        ({"prompt": 5}, 422, "prompt"),
        ({"max_tokens": -1}, 422, "max_tokens"),
        ({"max_tokens": 10**9}, 422, "max_tokens"),
        ({"max_tokens": "10"}, 422, "max_tokens"),
        ({"temperature": -1}, 422, "temperature"),
        ({"top_p": 0}, 422, "top_p"),
        ({"n": 17}, 422, "n must be"),
        ({"stop": ["a"] * 20}, 422, "stop"),
        ({"prompt": "a" * 100_001}, 422, "100000"),
        ({"prompt": []}, 422, "prompt"),
        ({"logprobs": 21}, 422, "logprobs"),
        ({"logprobs": -1}, 422, "logprobs"),
        ({"logit_bias": {"7": 101}}, 422, "logit bias"),
        ({"logit_bias": {"e": 5}}, 422, "token ids"),
        ({"logit_bias": {"65": 5}}, 422, "not in the vocabulary"),
        ({"presence_penalty": 2.5}, 422, "presence penalty"),
        ({"frequency_penalty": -3}, 422, "frequency penalty"),
        ({"structured_outputs": {"regex": "(a"}}, 422, "pattern"),
        ({"structured_outputs": {"regex": "(a)\\1"}}, 422, "unsupported syntax"),
        ({"guided_regex": "[0-9]{20}", "max_tokens": 5}, 422, "length"),
        ({"guided_choice": ["Ωmega", "€"], "max_tokens": 9}, 422, "characters"),
        ({"model": "gpt-4"}, 404, "does not exist"),
        ({"state": "cls1.AAAA"}, 422, "truncated"),
        ({"state": "x" * 100_000}, 422, "characters"),
        ({"state": "hello"}, 422, "not a state token"),
        ({"stream": "yes"}, 422, "stream"),
        (b"[" * 600_000 + b"]" * 600_000, 413, "over"),
    ],
)
def test_bad_input_is_a_json_error(
    server: ServerProcess, body: object, status: int, fragment: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(
        server.v1 + "/completions",
        content=content,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert fragment in error["message"]


def test_tampered_and_foreign_state_tokens_are_refused(
    server: ServerProcess, client: openai.OpenAI
) -> None:
    from toolkit.serve.state_token import StateCodec, StreamState

    first = client.completions.create(
        model="shakespeare", prompt="A", max_tokens=3, extra_body={"return_state": True}
    )
    token = first.choices[0].model_extra["state"]
    card = httpx.get(server.v1 + "/models").json()["data"][0]
    sizes = card["layers"], card["units"], card["vocab_size"]
    own = StateCodec(card["sha256"], *sizes)
    state = own.decode(token)
    foreign = StateCodec("00" * 32, *sizes).encode(state)
    # Signed with the model's own key (anyone with the model can), but garbage inside.
    logits = state.logits.copy()
    logits[:5] = [np.nan, np.inf, 3e38, -3e38, 0]
    garbage = own.encode(StreamState(state.h, state.c, logits, state.rng_state))
    cases = ((tampered(token), "integrity"), (foreign, "another model"), (garbage, "finite"))
    for bad, fragment in cases:
        with pytest.raises(openai.UnprocessableEntityError) as caught:
            client.completions.create(
                model="shakespeare", prompt="", max_tokens=3, extra_body={"state": bad}
            )
        assert fragment in str(caught.value)
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


# --------------------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def small_server() -> Iterator[ServerProcess]:
    running = start_server(
        "--api-key", KEY, "--max-batch", "2", "--max-queue", "1", "--request-timeout", "3",
        "--shutdown-timeout", "1",
    )  # fmt: skip
    yield running
    running.stop()


def test_api_key_is_required(small_server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(
            small_server.v1 + "/completions", json={"max_tokens": 1}, headers=headers
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    keyed = openai.OpenAI(base_url=small_server.v1, api_key=KEY, max_retries=0)
    assert keyed.completions.create(model="shakespeare", prompt="A", max_tokens=5).choices
    assert httpx.get(small_server.url + "/health").status_code == 200  # probes need no key


def test_full_queue_is_429_and_time_limit_ends_a_stream(small_server: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    long = {"prompt": "A", "max_tokens": 100_000, "temperature": 1.0}

    async def run() -> tuple[list[int], list[str]]:
        async with httpx.AsyncClient(base_url=small_server.v1, headers=headers, timeout=60) as h:
            running = []
            for _ in range(3):  # two join the batch, the third waits
                running.append(asyncio.create_task(h.post("/completions", json=long)))
                await asyncio.sleep(0.4)
            refused = await h.post("/completions", json=long)
            done = await asyncio.gather(*running)
            reasons = [r.json()["choices"][0]["finish_reason"] for r in done]
            return [refused.status_code, *[r.status_code for r in done]], reasons

    statuses, reasons = asyncio.run(run())
    assert statuses == [429, 200, 200, 200]
    assert reasons == ["timeout"] * 3


def test_shutdown_ends_open_streams_with_abort_and_exits_0(
    small_server: ServerProcess,
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"prompt": "A", "max_tokens": 100_000, "stream": True, "temperature": 1.0}
    events: list[str] = []
    with (
        httpx.Client(base_url=small_server.v1, headers=headers, timeout=30) as http,
        http.stream("POST", "/completions", json=body) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: ") and not events:
                small_server.proc.send_signal(signal.SIGTERM)
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "abort"
    assert small_server.proc.wait(timeout=30) == 0


def test_tflite_int8_batches_padded_rows_to_the_same_text() -> None:
    """LiteRT's batch is padded to a power of two (3 streams step as 4): the same texts."""
    running = start_server("--runtime", "tflite", "--variant", "int8")
    try:
        bodies = [
            {"prompt": prompt, "max_tokens": 80, "temperature": 0.8, "seed": i}
            for i, prompt in enumerate(["ROMEO:", "JULIET:", "First Citizen:"])
        ]

        async def run() -> list[str]:
            async with httpx.AsyncClient(base_url=running.v1, timeout=60) as http:
                answers = await asyncio.gather(*(http.post("/completions", json=b) for b in bodies))
            return [a.json()["choices"][0]["text"] for a in answers]

        texts = asyncio.run(run())
        generator = load(MODEL, runtime="tflite", variant="int8")
        for body, text in zip(bodies, texts, strict=True):
            expected = generator.generate(
                str(body["prompt"]), length=80, temperature=0.8, seed=int(body["seed"])
            )
            assert text == expected.texts[0]
    finally:
        assert running.stop() == 0


# --------------------------------------------------------------------------- controls, logprobs


def test_patterns_bias_and_penalties_through_the_openai_client(
    client: openai.OpenAI, generator: Generator
) -> None:
    """vLLM's fields through `extra_body` and OpenAI's own: the same texts as `generate`
    with the same options, alone or among 12 other streams of the same request."""
    import re

    name = r"[A-Z][a-z]{2,8}\n"
    for extra in ({"structured_outputs": {"regex": name}}, {"guided_regex": name}):
        answer = client.completions.create(
            model="shakespeare", prompt="ROMEO:\n", max_tokens=20, temperature=0.9, seed=3,
            n=12, extra_body=extra,
        )  # fmt: skip
        texts = [choice.text for choice in answer.choices]
        assert all(re.fullmatch(name, t) for t in texts), texts
        alone = generator.generate("ROMEO:\n", length=20, temperature=0.9, seed=3, regex=name)
        batch = generator.generate(
            "ROMEO:\n", length=20, temperature=0.9, seed=3, regex=name, num_samples=12
        )
        assert texts == batch.texts and texts[0] == alone.texts[0]
    picked = client.completions.create(
        model="shakespeare", prompt="Is it so?\n", max_tokens=10, temperature=0,
        extra_body={"structured_outputs": {"choice": ["Ay.", "No.", "Perhaps."]}},
    )  # fmt: skip
    assert picked.choices[0].text in ("Ay.", "No.", "Perhaps.")
    assert picked.choices[0].finish_reason == "stop"
    e = generator.index["e"]
    options = {"temperature": 0.8, "seed": 5, "presence_penalty": 0.5, "frequency_penalty": 1.0}
    biased = client.completions.create(
        model="shakespeare", prompt="ROMEO:", max_tokens=200, logit_bias={str(e): -100},
        **options,  # type: ignore[arg-type]
    )  # fmt: skip
    assert "e" not in biased.choices[0].text
    expected = generator.generate("ROMEO:", length=200, logit_bias={e: -100}, **options)
    assert biased.choices[0].text == expected.texts[0]


def test_logprobs_streamed_equal_whole_and_equal_the_runtime(
    client: openai.OpenAI, generator: Generator
) -> None:
    kwargs: dict[str, Any] = {"model": "shakespeare", "prompt": "ROMEO:", "max_tokens": 80}
    kwargs.update(temperature=0.9, seed=2, logprobs=5, echo=True)
    whole = client.completions.create(**kwargs).choices[0]
    chunks = list(client.completions.create(stream=True, **kwargs))
    assert whole.logprobs is not None
    lp = whole.logprobs
    assert (
        whole.text
        == "ROMEO:" + generator.generate("ROMEO:", length=80, temperature=0.9, seed=2).texts[0]
    )
    assert lp.tokens == list(whole.text) and lp.text_offset == list(range(len(whole.text)))
    assert lp.token_logprobs is not None and lp.token_logprobs[0] is None
    assert lp.top_logprobs is not None and lp.top_logprobs[0] is None
    assert all(5 <= len(top) <= 6 for top in lp.top_logprobs[1:])
    streamed: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "text_offset": []}
    for chunk in chunks:
        part = chunk.choices[0].logprobs
        if part is not None:
            for key, values in streamed.items():
                values.extend(getattr(part, key))
    assert streamed["tokens"] == lp.tokens
    assert streamed["token_logprobs"] == lp.token_logprobs
    assert streamed["text_offset"] == lp.text_offset
    # Each character's log-probability is the runtime's own log-softmax (one state carried).
    session = generator.session(1)
    session.feed("R")
    for ch, value in zip(whole.text[1:], lp.token_logprobs[1:], strict=True):
        assert session.logits is not None
        z = session.logits[0].astype(np.float64)
        expected = z[generator.index[ch]] - z.max() - np.log(np.exp(z - z.max()).sum())
        assert value == pytest.approx(expected, abs=1e-5)
        session.feed(ch)


def test_echo_with_no_tokens_scores_the_prompt(client: openai.OpenAI, server: Any) -> None:
    """lm-evaluation-harness's loglikelihood path: echo, logprobs, max_tokens 0."""
    text = "ROMEO:\nWhat light through yonder window breaks?"
    body = {"prompt": text, "max_tokens": 0, "echo": True, "logprobs": 1, "temperature": 0}
    answer = httpx.post(server.v1 + "/completions", json=body, timeout=60).json()
    choice = answer["choices"][0]
    assert choice["text"] == text
    values = choice["logprobs"]["token_logprobs"]
    assert values[0] is None and len(values) == len(text)
    assert all(v < 0 for v in values[1:])
    assert all(
        max(top.values()) >= v
        for top, v in zip(choice["logprobs"]["top_logprobs"][1:], values[1:], strict=True)
    )
    again = httpx.post(server.v1 + "/completions", json=body, timeout=60).json()
    assert again["choices"][0]["logprobs"] == choice["logprobs"]  # not from a cache's shortcut
