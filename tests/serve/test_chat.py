"""The server's tokenizer endpoints (vLLM's), prompts as token ids, and chat completions with
the `openai` client, against one real server process; the chat format as data."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from toolkit.chat_format import DEFAULT_CHAT_FORMAT, ChatFormat
from toolkit.errors import UsageError
from toolkit.export.manifest import build_manifest
from toolkit.runtime.manifest import Manifest
from toolkit.serve.model import ServedModel
from toolkit.serve.process import ServerProcess, start_server

MODEL = Path(__file__).resolve().parents[2] / "exported" / "shakespeare"
VOCAB = Manifest.read(MODEL).vocabulary
MESSAGES = [
    {"role": "system", "content": "A street in Verona."},
    {"role": "user", "content": "Good morrow, fair lady.", "name": "MERCUTIO"},
]
RENDERED = "CHORUS:\nA street in Verona.\n\nMERCUTIO:\nGood morrow, fair lady.\n\nJULIET:\n"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    running = start_server(MODEL, "--cache-mb", "1")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)


def test_tokenize_detokenize_round_trip(server: ServerProcess) -> None:
    for text in ["ROMEO:\nO, she doth teach the torches to burn bright!", "".join(VOCAB.chars)]:
        tokens = httpx.post(f"{server.url}/tokenize", json={"prompt": text}).json()
        assert tokens["tokens"] == VOCAB.encode(text).tolist()
        assert tokens["count"] == len(text) and tokens["max_model_len"] > 0
        back = httpx.post(f"{server.url}/detokenize", json={"tokens": tokens["tokens"]}).json()
        assert back == {"prompt": text}
    # lm-evaluation-harness's probe, and the chat prompt counted as the chat endpoint makes it.
    probe = {"prompt": "test", "add_special_tokens": False, "return_token_strs": True}
    assert httpx.post(f"{server.url}/tokenize", json=probe).json()["token_strs"] == list("test")
    chat = httpx.post(f"{server.url}/tokenize", json={"messages": MESSAGES}).json()
    assert chat["tokens"] == VOCAB.encode(RENDERED).tolist()


def test_tokenizer_info_and_models(server: ServerProcess) -> None:
    info = httpx.get(f"{server.url}/tokenizer_info").json()
    assert info["eos_token"] is None and info["bos_token"] is None and info["pad_token"] is None
    assert info["vocab"] == list(VOCAB.chars)
    assert info["chat_format"] == DEFAULT_CHAT_FORMAT
    assert "message.content" in info["chat_template"]
    models = httpx.get(f"{server.v1}/models").json()["data"]
    assert models[0]["vocab"] == list(VOCAB.chars)


def test_prompt_as_ids_is_the_prompt_as_text(client: openai.OpenAI) -> None:
    ids = VOCAB.encode("KING HENRY:").tolist()
    options = {"model": "shakespeare", "max_tokens": 60, "temperature": 0.9, "seed": 11}
    as_text = client.completions.create(prompt="KING HENRY:", **options)
    as_ids = client.completions.create(prompt=ids, **options)
    assert as_ids.choices[0].text == as_text.choices[0].text
    both = client.completions.create(prompt=[ids, VOCAB.encode("ROMEO:").tolist()], **options)
    assert both.choices[0].text == as_text.choices[0].text
    assert both.usage is not None and both.usage.prompt_tokens == len(ids) + 6


def test_chat_is_a_completion_of_the_turns(client: openai.OpenAI) -> None:
    options = {"model": "shakespeare", "temperature": 0.8, "seed": 4, "max_tokens": 400}
    reply = client.chat.completions.create(messages=MESSAGES, **options)
    completion = client.completions.create(prompt=RENDERED, stop="\n\n", **options)
    content = reply.choices[0].message.content
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert content == completion.choices[0].text and content and "\n\n" not in content
    assert reply.choices[0].finish_reason == completion.choices[0].finish_reason
    assert reply.usage is not None and reply.usage.prompt_tokens == len(RENDERED)
    chunks = list(
        client.chat.completions.create(
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            **options,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert (
        finishes[-1] == reply.choices[0].finish_reason and finishes.count(None) == len(finishes) - 1
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(content)
    two = client.chat.completions.create(messages=MESSAGES, n=2, **options)
    texts = client.completions.create(prompt=RENDERED, stop="\n\n", n=2, **options)
    assert [c.index for c in two.choices] == [0, 1]
    assert [c.message.content for c in two.choices] == [c.text for c in texts.choices]


def test_chat_logprobs_and_controls_are_the_completions(client: openai.OpenAI) -> None:
    """logprobs/top_logprobs in the chat API's shape, streamed or not, equal the completions
    endpoint's for the rendered turns; a pattern and penalties reach the reply too."""
    options: dict[str, Any] = {"model": "shakespeare", "temperature": 0.8, "seed": 4}
    options |= {"max_tokens": 60, "frequency_penalty": 0.5}
    reply = client.chat.completions.create(
        messages=MESSAGES, logprobs=True, top_logprobs=3, **options
    )
    completion = client.completions.create(prompt=RENDERED, stop="\n\n", logprobs=3, **options)
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert "".join(c.token for c in content) == reply.choices[0].message.content
    want = completion.choices[0].logprobs
    assert want is not None and [c.logprob for c in content] == want.token_logprobs
    assert all(len(c.top_logprobs) == 3 for c in content)
    chunks = client.chat.completions.create(
        messages=MESSAGES, logprobs=True, top_logprobs=3, stream=True, **options
    )
    streamed = [
        x.logprob
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for x in c.choices[0].logprobs.content or []
    ]
    assert streamed == [c.logprob for c in content]
    shaped = client.chat.completions.create(
        messages=MESSAGES, extra_body={"guided_choice": ["Ay, my lord.", "No."]}, **options
    )
    assert shaped.choices[0].message.content in ("Ay, my lord.", "No.")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"messages": []}, "at least one message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "'tool' is not one of"),
        ({"messages": [{"role": "user", "content": "Caf\u00e9"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "a", "name": "\u00c9"}]}, "messages[0].name"),
        ({"messages": [{"role": "user"}], "logprobs": 3}, "logprobs"),
        ({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}, "needs logprobs"),
        (
            {"messages": [{"role": "user", "content": "a"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": "a"}], "model": "gpt-4"}, "does not exist"),
    ],
)
def test_bad_chat_requests(server: ServerProcess, body: dict, fragment: str) -> None:
    response = httpx.post(f"{server.v1}/chat/completions", json=body)
    assert response.status_code in (404, 422)
    assert fragment in response.json()["error"]["message"]


def test_bad_token_requests(server: ServerProcess) -> None:
    cases = [
        ("/detokenize", {"tokens": [1, len(VOCAB)]}, f"[0, {len(VOCAB)})"),
        ("/tokenize", {"prompt": "\u00e9"}, "'\u00e9'"),
        ("/tokenize", {}, "either prompt or messages"),
        ("/v1/completions", {"prompt": [[1, 2], [-1]]}, "prompt[1]"),
    ]
    for path, body, fragment in cases:
        response = httpx.post(server.url + path, json=body)
        assert response.status_code == 422
        assert fragment in response.json()["error"]["message"]


def test_chat_format_from_file_or_manifest(tmp_path: Path) -> None:
    custom = {"names": {"system": "NARRATOR", "user": "Q", "assistant": "A"},
              "message": "{name}: {content}\n", "reply": "{name}:", "stop": "\n"}  # fmt: skip
    (tmp_path / "turns.json").write_text(json.dumps(custom), encoding="utf-8")
    served = ServedModel(MODEL, chat_format=tmp_path / "turns.json")
    assert served.chat_format.render([("user", None, "Who?")]) == "Q: Who?\nA:"
    # Stored in the manifest at export (and kept by a later export without one), it is the
    # server's default.
    previous = Manifest.read(MODEL)
    made = build_manifest(previous, previous.model, VOCAB, previous.source, [], None, custom)
    again = build_manifest(made, previous.model, VOCAB, previous.source, [], None)
    assert made.chat_format == again.chat_format == custom
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder, ignore=shutil.ignore_patterns("*.tflite", "char_lstm.*"))
    manifest = Manifest.read(folder)
    dataclasses.replace(manifest, chat_format=custom).write(folder)
    assert Manifest.read(folder).chat_format == custom
    assert ServedModel(folder).chat_format == ChatFormat.from_dict(custom)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([], "a JSON object"),
        ({"speakers": {}}, "unknown key(s) speakers"),
        ({"message": "{name}:"}, "{content} once"),
        ({"names": {"user": "U"}}, "'names' must give"),
        ({"stop": ""}, "'stop' must not be empty"),
    ],
)
def test_bad_chat_formats(data: object, fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)):
        ChatFormat.from_dict(data)


def test_bad_chat_format_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "not.json").write_text("{", encoding="utf-8")
    vocab = {"names": {"system": "S", "user": "U", "assistant": "\u00c9"}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    for name, command in [
        ("not.json", ["export", str(tmp_path), "--chat-format", str(tmp_path / "not.json")]),
        ("vocab.json", ["serve", str(MODEL), "--chat-format", str(tmp_path / "vocab.json")]),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "toolkit", *command], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        errors = proc.stderr.strip().splitlines()
        assert len(errors) == 1 and errors[0].startswith("error:") and name in errors[0], errors
