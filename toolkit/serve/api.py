"""The HTTP API: OpenAI's completions (so the `openai` client works unchanged), models,
health and Prometheus metrics, in front of the engine.

Errors have vLLM's and OpenAI's shape, `{"error": {"message", "type", "code"}}`: 400 for a
body that is not JSON, 422 for a request that is (wrong types, limits, unknown characters,
bad state tokens), 401 without the API key, 404 for another model, 413 for a body over the
limit, 429 when the queue is full, 503 while loading or shutting down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticValidationError

from toolkit.errors import UsageError, first_line
from toolkit.runtime.decode import DecodeOptions, Group, Score
from toolkit.serve.engine import Engine
from toolkit.serve.model import ServedModel, ServeLimits
from toolkit.serve.request import Event, NotAccepting, QueueFull, Request, deliver_each
from toolkit.serve.state_token import StateTokenError, StreamState
from toolkit.vocabulary import Vocabulary


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code)


def error_response(status: int, message: str, type_: str, code: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": type_, "code": code}}, status_code=status
    )


def invalid(message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(422, message, "invalid_request_error", code)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: the text matches `regex` in full, or is one of `choice`."""

    model_config = ConfigDict(extra="forbid")
    regex: StrictStr | None = None
    choice: list[StrictStr] | None = None


class CompletionBody(BaseModel):
    """POST /v1/completions. Lengths are in characters (a token is a character here)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    # Text, or token ids as OpenAI allows: a list of ints, or a list of such lists.
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]] = ""
    max_tokens: StrictInt = 16
    temperature: float = Field(1.0, ge=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: StrictInt = Field(0, ge=-1)  # -1 or 0: no limit
    n: StrictInt = Field(1, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(None, ge=0, lt=2**63)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    echo: StrictBool = False
    # Beyond OpenAI's API: the stream's state as a token, and continuing from one.
    return_state: StrictBool = False
    state: StrictStr | None = None
    # Per character: its log-probability and the `logprobs` most likely (OpenAI's shape).
    logprobs: StrictInt | None = Field(None, ge=0, le=20)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None  # {token id as a string: -100...100}
    # Pattern constraints as vLLM takes them (and its older fields).
    structured_outputs: StructuredOutputs | None = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    # OpenAI parameters this server does not implement: refused unless left at their default.
    suffix: Literal[None] = None
    best_of: StrictInt | None = None


@dataclass
class Prepared:
    """A checked request: one engine request per prompt."""

    body: CompletionBody
    prompts: list[str]
    requests: list[Request]
    queue: asyncio.Queue[tuple[int, list[Event]]]


class Metrics:
    """The Prometheus metrics, in a registry of the server's own."""

    def __init__(self, engine_of: Callable[[], Engine | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        latency = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
        self.ttfc = Histogram(
            "toolkit_time_to_first_char_seconds",
            "From arrival to the first character drawn",
            buckets=latency,
            registry=self.registry,
        )
        self.inter_char = Histogram(
            "toolkit_inter_char_latency_seconds",
            "Per request: the mean time between its characters",
            buckets=(1e-4, 2.5e-4, 5e-4, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "toolkit_request_latency_seconds",
            "From arrival to the last character",
            buckets=(*latency, 60, 120),
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "toolkit_queue_time_seconds",
            "From arrival to joining the batch",
            buckets=latency,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "toolkit_batch_size",
            "Rows in each batched step",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine_of))

    def finished(self, request: Request) -> None:
        end = request.finished_at or time.perf_counter()
        if request.admitted is not None:
            self.queue_time.observe(request.admitted - request.arrived)
        if request.first_char_at is not None:
            self.ttfc.observe(request.first_char_at - request.arrived)
            per_choice = request.chars / max(1, request.n)
            if per_choice > 1:
                self.inter_char.observe((end - request.first_char_at) / (per_choice - 1))
        self.request_latency.observe(end - request.arrived)


class _EngineCollector:
    def __init__(self, engine_of: Callable[[], Engine | None]) -> None:
        self.engine_of = engine_of

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        engine = self.engine_of()
        running = len(engine.running) if engine else 0
        waiting = len(engine.waiting) if engine else 0
        chars = engine.stats.chars if engine else 0
        hits = engine.stats.cache_hits if engine else 0
        steps = engine.stats.steps if engine else 0
        step_seconds = engine.stats.step_seconds if engine else 0.0
        return [
            GaugeMetricFamily("toolkit_requests_running", "Requests in the batch", value=running),
            GaugeMetricFamily("toolkit_requests_waiting", "Requests queued", value=waiting),
            CounterMetricFamily(
                "toolkit_generated_chars", "Characters generated", value=float(chars)
            ),
            CounterMetricFamily(
                "toolkit_prefix_cache_hits", "Prompts whose state came from the cache", value=hits
            ),
            CounterMetricFamily("toolkit_steps", "Batched steps of the model", value=steps),
            CounterMetricFamily(
                "toolkit_step_seconds", "Time in the model's batched step", value=step_seconds
            ),
        ]


class Server:
    """What the routes share: the model (once loaded), the engine, the limits, the state."""

    def __init__(self, model: ServedModel, limits: ServeLimits) -> None:
        self.model = model
        self.limits = limits
        self.engine: Engine | None = None
        self.status: Literal["loading", "ok", "shutting down", "error"] = "loading"
        self.metrics = Metrics(lambda: self.engine)
        self.loaded = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- life cycle

    def load(
        self, on_error: Callable[[str], None], loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Opens the backend and starts the engine on a thread, so that /health answers 503
        meanwhile; `on_error` gets a one-line message if it cannot. `loop`: the event loop the
        requests are served on (the engine hands each flush's text to it in one call)."""
        self.loop = loop

        def run() -> None:
            try:
                engine = self.model.open_engine(self.limits)
            except Exception as exc:
                self.status = "error"
                self.loaded.set()
                on_error(first_line(exc))
                return
            engine.on_step = self.metrics.batch_size.observe
            engine.on_finish = self.metrics.finished
            if self.loop is not None:
                loop = self.loop

                def deliver_many(batches: list[tuple[Request, list[Event]]]) -> None:
                    loop.call_soon_threadsafe(deliver_each, batches)

                engine.deliver_many = deliver_many
            engine.start()
            self.engine = engine
            if self.status == "loading":
                self.status = "ok"
            self.loaded.set()

        threading.Thread(target=run, name="toolkit-load", daemon=True).start()

    def begin_shutdown(self, timeout_s: float) -> None:
        """Stop accepting; open streams may finish for `timeout_s`, then end with "abort"."""
        self.status = "shutting down"
        engine = self.engine
        if engine is None:
            return
        engine.stop_accepting()
        timer = threading.Timer(timeout_s, engine.abort_all)
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.abort_all()
            self.engine.close()

    # ----------------------------------------------------------------- requests

    def prepare(self, data: Any, loop: asyncio.AbstractEventLoop) -> Prepared:
        try:
            body = CompletionBody.model_validate(data)
        except PydanticValidationError as exc:
            raise invalid(_validation_message(exc), "invalid_type") from None
        limits, model = self.limits, self.model
        if body.model is not None and body.model != model.name:
            raise ApiError(
                404,
                f"model {body.model!r} does not exist; this server serves {model.name!r}",
                "invalid_request_error",
                "model_not_found",
            )
        prompts = prompt_texts(body.prompt, model.vocab)
        if not prompts or len(prompts) > limits.max_prompts:
            raise invalid(f"prompt: give 1 to {limits.max_prompts} prompts, got {len(prompts)}")
        if not 0 <= body.max_tokens <= limits.max_tokens:
            raise invalid(f"max_tokens must be in [0, {limits.max_tokens}], got {body.max_tokens}")
        if body.n > limits.max_n or body.n > limits.max_batch:
            raise invalid(f"n must be at most {min(limits.max_n, limits.max_batch)}, got {body.n}")
        if body.best_of is not None and body.best_of != body.n:
            raise invalid("best_of is not supported (leave it out, or equal to n)")
        stops = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        if len(stops) > limits.max_stops or any(not 0 < len(s) <= 100 for s in stops):
            raise invalid(f"stop: at most {limits.max_stops} strings of 1 to 100 characters")
        for i, prompt in enumerate(prompts):
            if len(prompt) > limits.max_prompt_chars:
                raise invalid(
                    f"prompt{_at(i, prompts)} has {len(prompt)} characters; the limit is "
                    f"{limits.max_prompt_chars} (--max-prompt-chars)",
                    "prompt_too_long",
                )
            unknown = model.vocab.unknown(prompt)
            if unknown:
                shown = ", ".join(repr(ch) for ch in unknown[:20])
                raise invalid(
                    f"prompt{_at(i, prompts)} has characters not in the model's vocabulary: "
                    f"{shown}",
                    "unknown_characters",
                )
        start: StreamState | None = None
        if body.state is not None:
            if len(prompts) != 1:
                raise invalid("a state token continues one stream: give a single prompt")
            try:
                start = model.codec.decode(body.state)
            except StateTokenError as exc:
                raise invalid(f"state: {exc}", "invalid_state") from None
        options = self.decode_options(body, stops)
        queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()

        def deliver_to(base: int) -> Callable[[Request, list[Event]], None]:
            def deliver(request: Request, events: list[Event]) -> None:
                if _on_loop(loop):
                    queue.put_nowait((base, events))  # on the loop already (deliver_each)
                else:
                    loop.call_soon_threadsafe(queue.put_nowait, (base, events))

            return deliver

        requests = []
        for i, prompt in enumerate(prompts):
            # An empty prompt starts a text as `generate` does (a line break); after a state
            # token it adds nothing.
            fed = prompt if prompt or start is not None else model.vocab.start_text
            requests.append(
                Request(
                    prompt_ids=model.vocab.encode(fed).tolist(),
                    options=options,
                    start=start,
                    return_state=body.return_state,
                    prompt_logprobs=body.echo and body.logprobs is not None,
                    timeout_s=limits.request_timeout_s,
                    deliver=deliver_to(i * body.n),
                )
            )
        return Prepared(body, prompts, requests, queue)

    def decode_options(self, body: CompletionBody, stops: tuple[str, ...]) -> DecodeOptions:
        """The request's DecodeOptions (checked there, once); a pattern is compiled here, so
        that a bad one is this request's 422 before it is queued (compiled patterns are
        cached and shared across requests)."""
        regex, choice = body.guided_regex, body.guided_choice
        if body.structured_outputs is not None:
            regex = body.structured_outputs.regex or regex
            choice = body.structured_outputs.choice or choice
        bias = []
        for key, value in (body.logit_bias or {}).items():
            if not key.strip().lstrip("-").isdigit():
                raise invalid(f"logit_bias: keys are token ids (see /v1/models), got {key!r}")
            bias.append((int(key), value))
        try:
            options = DecodeOptions(
                length=body.max_tokens,
                temperature=body.temperature,
                top_k=max(body.top_k, 0),
                top_p=body.top_p,
                stop=stops,
                seed=body.seed,
                n=body.n,
                logit_bias=tuple(sorted(bias)),
                presence_penalty=body.presence_penalty or 0.0,
                frequency_penalty=body.frequency_penalty or 0.0,
                regex=regex,
                choice=tuple(choice or ()),
                logprobs=body.logprobs,
            )
            Group(options, self.model.vocab)  # the pattern and the bias's ids, checked now
        except UsageError as exc:
            code = "invalid_pattern" if regex or choice else "invalid_value"
            raise invalid(str(exc), code) from None
        return options

    def submit(self, prepared: Prepared) -> None:
        engine = self.engine
        if engine is None or self.status != "ok":
            raise ApiError(503, f"the server is {self.status}", "server_error", "unavailable")
        if engine.error is not None:
            raise ApiError(503, "the engine stopped on an error", "server_error", "unavailable")
        submitted: list[Request] = []
        try:
            for request in prepared.requests:
                engine.submit(request)
                submitted.append(request)
        except (QueueFull, NotAccepting) as exc:
            for request in submitted:
                engine.cancel(request)
            if isinstance(exc, QueueFull):
                raise ApiError(429, str(exc), "rate_limit_error", "queue_full") from None
            raise ApiError(503, str(exc), "server_error", "unavailable") from None

    def cancel(self, prepared: Prepared) -> None:
        if self.engine is not None:
            for request in prepared.requests:
                if request.finished_at is None:
                    self.engine.cancel(request)

    async def events(self, prepared: Prepared) -> AsyncIterator[tuple[int, Event]]:
        """Each choice's events in order, until every choice has ended."""
        open_choices = len(prepared.requests) * prepared.body.n
        while open_choices:
            base, batch = await prepared.queue.get()
            for event in batch:
                if event.finish_reason is not None:
                    open_choices -= 1
                yield base + event.choice, event

    def choice_extra(self, event: Event) -> dict[str, Any]:
        if event.state is None:
            return {}
        return {"state": self.model.codec.encode(event.state)}

    def usage(self, prepared: Prepared, completion_chars: int) -> dict[str, int]:
        prompt_chars = sum(len(r.prompt_ids) for r in prepared.requests)
        return {
            "prompt_tokens": prompt_chars,
            "completion_tokens": completion_chars,
            "total_tokens": prompt_chars + completion_chars,
        }


def prompt_texts(prompt: str | list[Any], vocab: Vocabulary) -> list[str]:
    """The prompts as text: token ids are decoded (ids outside the vocabulary: a 422)."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [ids_text(prompt, vocab, "prompt")]
    if prompt and isinstance(prompt[0], list):
        return [ids_text(ids, vocab, f"prompt[{i}]") for i, ids in enumerate(prompt)]
    return list(prompt)


def ids_text(ids: list[int], vocab: Vocabulary, where: str) -> str:
    bad = sorted({i for i in ids if not 0 <= i < len(vocab)})
    if bad:
        shown = ", ".join(map(str, bad[:20]))
        raise invalid(
            f"{where}: token ids must be in [0, {len(vocab)}), got {shown}", "invalid_token"
        )
    return vocab.decode(ids)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _at(i: int, prompts: list[str]) -> str:
    return f"[{i}]" if len(prompts) > 1 else ""


def _validation_message(exc: PydanticValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


# --------------------------------------------------------------------------- the app


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="char-lstm-toolkit", docs_url="/docs", redoc_url=None)
    app.state.server = server
    limits = server.limits

    if limits.api_key:
        app.add_middleware(RequireKey, key=limits.api_key)

    @app.get("/health")
    async def health() -> JSONResponse:
        status = server.status
        if server.engine is not None and server.engine.error is not None:
            status = "error"  # the engine thread stopped: let the orchestrator restart us
        return JSONResponse({"status": status}, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [server.model.card()]})

    @app.post("/v1/completions")
    async def completions(request: HttpRequest) -> Response:
        try:
            data = await _read_json(request, limits.max_body_bytes)
            prepared = server.prepare(data, asyncio.get_running_loop())
            server.submit(prepared)
        except ApiError as exc:
            return exc.response()
        meta = {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": server.model.name,
            "system_fingerprint": server.model.fingerprint,
        }
        if prepared.body.stream:
            return EventStream(_sse(server, prepared, meta), lambda: server.cancel(prepared))
        return await _complete(server, prepared, meta, request)

    return app


async def _read_json(request: HttpRequest, max_bytes: int) -> Any:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ApiError(
            413, f"request body over {max_bytes} bytes", "invalid_request_error", "too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(
                413, f"request body over {max_bytes} bytes", "invalid_request_error", "too_large"
            )
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(
            400, f"request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json"
        ) from None


def logprobs_shape(
    chars: tuple[str, ...], text: str, scores: Sequence[Score | None], offset: int
) -> dict[str, Any]:
    """OpenAI's completions `logprobs` for `text` (a token is a character): each one's
    log-probability (null where nothing predicts it), the most likely characters at each
    place with theirs (the drawn one included, as OpenAI does), and offsets into the text."""
    tops: list[dict[str, float] | None] = []
    for ch, score in zip(text, scores, strict=True):
        if score is None:
            tops.append(None)
            continue
        top = {chars[t]: lp for t, lp in zip(score[1], score[2], strict=True)}
        top.setdefault(ch, score[0])
        tops.append(top)
    return {
        "tokens": list(text),
        "token_logprobs": [None if score is None else score[0] for score in scores],
        "top_logprobs": tops,
        "text_offset": list(range(offset, offset + len(text))),
    }


async def _complete(
    server: Server, prepared: Prepared, meta: dict[str, Any], http: HttpRequest
) -> Response:
    """The whole answer at once; a client that goes away cancels its rows."""
    watcher = asyncio.create_task(_watch_disconnect(http.receive, lambda: server.cancel(prepared)))
    n_choices = len(prepared.requests) * prepared.body.n
    texts = ["" for _ in range(n_choices)]
    scores: list[list[Score | None]] = [[] for _ in range(n_choices)]
    choices: list[dict[str, Any]] = [{} for _ in range(n_choices)]
    try:
        async for index, event in server.events(prepared):
            texts[index] += event.text
            scores[index] += event.logprobs or []
            if event.finish_reason is not None:
                choices[index] = {
                    "index": index,
                    "text": "",
                    "logprobs": None,
                    "finish_reason": event.finish_reason,
                    **server.choice_extra(event),
                }
    finally:
        watcher.cancel()
    body, n, chars = prepared.body, prepared.body.n, server.model.vocab.chars
    for index, choice in enumerate(choices):
        request = prepared.requests[index // n]
        prefix = prepared.prompts[index // n] if body.echo else ""
        choice["text"] = prefix + texts[index]
        if body.logprobs is not None:
            before = _prompt_scores(request, prefix)
            shown = choice["text"]
            choice["logprobs"] = logprobs_shape(chars, shown, [*before, *scores[index]], 0)
    generated = sum(len(t) for t in texts)
    return JSONResponse({**meta, "choices": choices, "usage": server.usage(prepared, generated)})


async def _sse(server: Server, prepared: Prepared, meta: dict[str, Any]) -> AsyncIterator[bytes]:
    """Server-Sent Events: a chunk per flush of each choice's new text, a last chunk with its
    finish_reason, usage if asked for, then [DONE]. With echo, a request's prompt comes first
    (once it is fed, so that it carries its log-probabilities). The fields every chunk
    repeats are rendered once."""
    body, n, chars = prepared.body, prepared.body.n, server.model.vocab.chars
    generated = 0
    head = b"data: " + json.dumps({**meta, "choices": []}, ensure_ascii=False).encode()[:-3]
    echoed: set[int] = set()
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    async for index, event in server.events(prepared):
        which = index // n
        prompt = prepared.prompts[which] if body.echo else ""
        if body.echo and which not in echoed:
            echoed.add(which)
            scores = _prompt_scores(prepared.requests[which], prompt)
            echo = [
                {
                    "index": which * n + k,
                    "text": prompt,
                    "logprobs": (
                        logprobs_shape(chars, prompt, scores, 0)
                        if body.logprobs is not None
                        else None
                    ),
                    "finish_reason": None,
                }
                for k in range(n)
            ]
            yield _event({**meta, "choices": echo})
        generated += len(event.text)
        logprobs = None
        if body.logprobs is not None:
            offset = len(prompt) + event.offset
            logprobs = logprobs_shape(chars, event.text, event.logprobs or [], offset)
        choice = {
            "index": index,
            "text": event.text,
            "logprobs": logprobs,
            "finish_reason": event.finish_reason,
            **server.choice_extra(event),
        }
        yield head + b"[" + dumps(choice).encode() + b"]}\n\n"
    options = body.stream_options
    if options is not None and options.include_usage:
        yield _event({**meta, "choices": [], "usage": server.usage(prepared, generated)})
    yield b"data: [DONE]\n\n"


def _prompt_scores(request: Request, prompt: str) -> list[Score | None]:
    """The scores of the echoed prompt's characters (an empty prompt is fed a line break,
    which is not echoed)."""
    scores = request.prompt_scores
    return scores[len(scores) - len(prompt) :] if prompt else []


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"


async def _watch_disconnect(receive: Any, on_disconnect: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


class EventStream(Response):
    """A text/event-stream response that cancels the stream's rows as soon as the client
    disconnects (not only at the next write)."""

    def __init__(self, chunks: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        # No Response.__init__: it would declare a Content-Length for an empty body.
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies such as nginx: do not buffer the stream
        ]
        self.chunks = chunks
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        watcher = asyncio.create_task(_watch_disconnect(receive, self.on_disconnect))
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away mid-write
            self.on_disconnect()
        finally:
            watcher.cancel()


TOKENIZER_PATHS = ("/tokenize", "/detokenize", "/tokenizer_info")


class RequireKey:
    """ASGI middleware: /v1/ routes and the tokenizer's need `Authorization: Bearer KEY` (health and metrics do
    not, so that probes and scrapers need no secret)."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (
            scope["path"].startswith("/v1/") or scope["path"] in TOKENIZER_PATHS
        ):
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(
                    401, "missing or wrong API key", "authentication_error", "invalid_api_key"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
