"""The model's text as other tools speak it: OpenAI's chat completions and vLLM's tokenizer
endpoints, added to the API's app by `add_routes`.

POST /v1/chat/completions: the messages become one prompt by the model's turn format
(toolkit/chat_format.py), the reply is a completion of it that ends at the format's stop, and
the answer is reshaped as OpenAI's chat objects; checking, batching, sampling, seeds and
cancelling are the completions endpoint's. POST /tokenize, POST /detokenize and
GET /tokenizer_info answer at the root, as vLLM's do.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal, TypeVar

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from toolkit.runtime.decode import Score
from toolkit.serve.api import (
    ApiError,
    EventStream,
    Prepared,
    Server,
    StreamOptions,
    _read_json,
    _validation_message,
    _watch_disconnect,
    ids_text,
    invalid,
)

# Roles a message may have; OpenAI's newer "developer" is its system role.
ROLE_OF = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# A reply ends at the format's stop (a speech's end); this bounds one that does not.
DEFAULT_MAX_TOKENS = 1000
Body = TypeVar("Body", bound=BaseModel)


def add_routes(app: FastAPI, server: Server) -> None:
    max_bytes = server.limits.max_body_bytes

    @app.post("/v1/chat/completions")
    async def chat(request: HttpRequest) -> Response:
        return await chat_completions(server, request, max_bytes)

    @app.post("/tokenize")
    async def tokenize(request: HttpRequest) -> JSONResponse:
        try:
            body = _parse(TokenizeBody, await _read_json(request, max_bytes))
            _check_model(server, body.model)
            text = _tokenize_text(server, body)
            unknown = server.model.vocab.unknown(text)
            if unknown:
                shown = ", ".join(repr(ch) for ch in unknown[:20])
                raise invalid(
                    f"prompt has characters not in the model's vocabulary: {shown}",
                    "unknown_characters",
                )
        except ApiError as exc:
            return exc.response()
        ids = server.model.vocab.encode(text).tolist()
        return JSONResponse(
            {
                "count": len(ids),
                # The state carries any length: the limit is the longest prompt accepted.
                "max_model_len": server.limits.max_prompt_chars,
                "tokens": ids,
                "token_strs": list(text) if body.return_token_strs else None,
            }
        )

    @app.post("/detokenize")
    async def detokenize(request: HttpRequest) -> JSONResponse:
        try:
            body = _parse(DetokenizeBody, await _read_json(request, max_bytes))
            _check_model(server, body.model)
            text = ids_text(body.tokens, server.model.vocab, "tokens")
        except ApiError as exc:
            return exc.response()
        return JSONResponse({"prompt": text})

    @app.get("/tokenizer_info")
    async def tokenizer_info() -> JSONResponse:
        model = server.model
        return JSONResponse(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",  # as tokenizer.json loads
                "eos_token": None,
                "bos_token": None,
                "pad_token": None,
                "unk_token": None,
                "model_max_length": server.limits.max_prompt_chars,
                "vocab_size": len(model.vocab),
                "vocab": list(model.vocab.chars),  # token id = index
                "chat_format": model.chat_format.to_dict(),
                "chat_template": model.chat_format.jinja_template(),
            }
        )


class TokenizeBody(BaseModel):
    """POST /tokenize (vLLM's): text, or chat messages in the model's turn format."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[Any] | None = None
    add_special_tokens: StrictBool = True  # there are none: accepted, changes nothing
    add_generation_prompt: StrictBool = True
    return_token_strs: StrictBool = False


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = None
    tokens: list[StrictInt]


def _parse(model: type[Body], data: Any) -> Body:
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise invalid(_validation_message(exc), "invalid_type") from None


def _check_model(server: Server, name: str | None) -> None:
    if name is not None and name != server.model.name:
        raise ApiError(
            404,
            f"model {name!r} does not exist; this server serves {server.model.name!r}",
            "invalid_request_error",
            "model_not_found",
        )


def _tokenize_text(server: Server, body: TokenizeBody) -> str:
    """The text /tokenize counts: the prompt, or the messages as the chat endpoint renders
    them (with the assistant's heading if add_generation_prompt)."""
    if (body.prompt is None) == (body.messages is None):
        raise invalid("give either prompt or messages")
    if body.prompt is not None:
        return body.prompt
    text = chat_prompt(server, _parse(ChatBody, {"messages": body.messages}))
    if not body.add_generation_prompt:
        return text[: len(text) - len(server.model.chat_format.reply_text())]
    return text


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: StrictStr
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatBody(BaseModel):
    """The request; the sampling fields are the completions endpoint's."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    messages: list[ChatMessage]
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    temperature: float = Field(1.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: StrictInt = Field(0, ge=-1)
    n: StrictInt = Field(1, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    # The controls of the completions endpoint, in the chat API's shape.
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    # Not implemented here: refused unless left at their default.
    tools: Literal[None] = None
    response_format: dict[str, Any] | None = None


def chat_prompt(server: Server, body: ChatBody) -> str:
    """The prompt the messages make; a 422 naming the message that cannot be one."""
    if not body.messages:
        raise invalid("messages: give at least one message")
    vocab, turns = server.model.vocab, server.model.chat_format
    messages: list[tuple[str, str | None, str]] = []
    for i, message in enumerate(body.messages):
        role = ROLE_OF.get(message.role)
        if role is None:
            raise invalid(
                f"messages[{i}].role: {message.role!r} is not one of system, user, assistant",
                "invalid_role",
            )
        for field, value in (("content", message.text()), ("name", message.name or "")):
            unknown = vocab.unknown(value)
            if unknown:
                shown = ", ".join(repr(ch) for ch in unknown[:20])
                raise invalid(
                    f"messages[{i}].{field} has characters not in the model's vocabulary: {shown}",
                    "unknown_characters",
                )
        messages.append((role, message.name, message.text()))
    return turns.render(messages)


def prepare_chat(server: Server, data: Any, loop: asyncio.AbstractEventLoop) -> Prepared:
    """The chat request as a completion request, checked by the completions endpoint."""
    try:
        body = ChatBody.model_validate(data)
    except PydanticValidationError as exc:
        raise invalid(_validation_message(exc), "invalid_type") from None
    if body.top_logprobs is not None and not body.logprobs:
        raise invalid("top_logprobs needs logprobs: true")
    if body.response_format not in (None, {"type": "text"}):
        raise invalid("response_format: only {'type': 'text'} is supported")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    max_tokens = body.max_completion_tokens or body.max_tokens
    completion = {
        "model": body.model,
        "prompt": chat_prompt(server, body),
        "max_tokens": min(DEFAULT_MAX_TOKENS, server.limits.max_tokens)
        if max_tokens is None
        else max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "top_k": body.top_k,
        "n": body.n,
        "stop": [server.model.chat_format.stop, *stops],
        "seed": body.seed,
        "stream": body.stream,
        "stream_options": body.stream_options.model_dump() if body.stream_options else None,
        "logprobs": (body.top_logprobs or 0) if body.logprobs else None,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "logit_bias": body.logit_bias,
        "structured_outputs": body.structured_outputs,
        "guided_regex": body.guided_regex,
        "guided_choice": body.guided_choice,
    }
    return server.prepare(completion, loop)


async def chat_completions(server: Server, request: HttpRequest, max_body_bytes: int) -> Response:
    try:
        data = await _read_json(request, max_body_bytes)
        prepared = prepare_chat(server, data, asyncio.get_running_loop())
        server.submit(prepared)
    except ApiError as exc:
        return exc.response()
    meta = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": server.model.name,
        "system_fingerprint": server.model.fingerprint,
    }
    if prepared.body.stream:
        return EventStream(_chat_sse(server, prepared, meta), lambda: server.cancel(prepared))
    return await _chat_complete(server, prepared, meta, request)


async def _chat_complete(
    server: Server, prepared: Prepared, meta: dict[str, Any], http: HttpRequest
) -> Response:
    watcher = asyncio.create_task(_watch_disconnect(http.receive, lambda: server.cancel(prepared)))
    texts = ["" for _ in range(prepared.body.n)]
    scores: list[list[Score]] = [[] for _ in range(prepared.body.n)]
    reasons: list[str | None] = [None] * prepared.body.n
    try:
        async for index, event in server.events(prepared):
            texts[index] += event.text
            scores[index] += event.logprobs or []
            if event.finish_reason is not None:
                reasons[index] = event.finish_reason
    finally:
        watcher.cancel()
    chars = server.model.vocab.chars
    scored = prepared.body.logprobs is not None
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "logprobs": chat_logprobs(chars, text, scores[i]) if scored else None,
            "finish_reason": reasons[i],
        }
        for i, text in enumerate(texts)
    ]
    usage = server.usage(prepared, sum(len(t) for t in texts))
    return JSONResponse({**meta, "object": "chat.completion", "choices": choices, "usage": usage})


async def _chat_sse(
    server: Server, prepared: Prepared, meta: dict[str, Any]
) -> AsyncIterator[bytes]:
    """A first chunk per choice with the role, one per flush of new text, one with the
    finish_reason, usage if asked for, then [DONE] (OpenAI's order)."""
    head = {**meta, "object": "chat.completion.chunk"}

    chars, scored = server.model.vocab.chars, prepared.body.logprobs is not None

    def chunk(
        index: int, delta: dict[str, str], finish: str | None = None, logprobs: Any = None
    ) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return _event({**head, "choices": [choice]})

    for index in range(prepared.body.n):
        yield chunk(index, {"role": "assistant", "content": ""})
    generated = 0
    async for index, event in server.events(prepared):
        generated += len(event.text)
        if event.text:
            logprobs = chat_logprobs(chars, event.text, event.logprobs or []) if scored else None
            yield chunk(index, {"content": event.text}, None, logprobs)
        if event.finish_reason is not None:
            yield chunk(index, {}, event.finish_reason)
    options = prepared.body.stream_options
    if options is not None and options.include_usage:
        yield _event({**head, "choices": [], "usage": server.usage(prepared, generated)})
    yield b"data: [DONE]\n\n"


def chat_logprobs(chars: tuple[str, ...], text: str, scores: list[Score]) -> dict[str, Any]:
    """The chat API's `logprobs`: per character (a token here), its log-probability, its
    UTF-8 bytes and the most likely characters with theirs."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    content = []
    for ch, (lp, ids, values) in zip(text, scores, strict=True):
        top = [entry(chars[t], v) for t, v in zip(ids, values, strict=True)]
        content.append({**entry(ch, lp), "top_logprobs": top})
    return {"content": content}


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"
