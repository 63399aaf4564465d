"""`toolkit generate`: text from an exported model, streamed as it is produced."""

from __future__ import annotations

import codecs
import json
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import choice
from toolkit.errors import UsageError
from toolkit.runtime.backends import RUNTIMES
from toolkit.runtime.decode import compile_pattern
from toolkit.runtime.generator import UNKNOWN_CHOICES, decode_options, load
from toolkit.runtime.manifest import VARIANTS

# The controls' options, declared once here so that `generate` reads as a list.
NativeSampler = Annotated[
    bool,
    typer.Option(
        help="--runtime c: choose characters in the C decoder too (integer sampler, "
        "PCG32): the firmware's and the wasm's text for the same options and seed"
    ),
]
Regex = Annotated[str | None, typer.Option(help="the text must match this regex in full")]
Choices = Annotated[
    list[str] | None,
    typer.Option("--choice", help="the text is one of these strings (repeat the option)"),
]
Bias = Annotated[
    list[str] | None,
    typer.Option(help=r"logit bias per character, -100..100: 'e=-5,\n=+2' (\, for a comma)"),
]
PresencePenalty = Annotated[float, typer.Option(help="-2..2, off each character already generated")]
FrequencyPenalty = Annotated[float, typer.Option(help="-2..2, times how often it was generated")]
Logprobs = Annotated[
    int | None,
    typer.Option(help="with --json: each character's log-probability and the N most likely"),
]


def generate(
    model: Annotated[
        Path | None,
        typer.Argument(help="export folder (run directory for --runtime keras)"),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="tflm: TensorFlow Lite Micro's interpreter; c: the exported C, compiled here",
            **choice(RUNTIMES),
        ),
    ] = "onnx",
    variant: Annotated[
        str,
        typer.Option(help="auto: the most precise variant present", **choice(["auto", *VARIANTS])),
    ] = "auto",
    prompt: Annotated[str, typer.Option(help="text that warms up the state")] = "ROMEO:",
    length: Annotated[int, typer.Option(help="characters to generate")] = 500,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.8,
    top_k: Annotated[int, typer.Option(help="keep the k most likely (0 = all)")] = 0,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass in (0, 1]")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    num_samples: Annotated[int, typer.Option(help="texts generated in one batch")] = 1,
    stop: Annotated[str | None, typer.Option(help="stop when this string appears")] = None,
    unknown: Annotated[
        str,
        typer.Option(
            help="what to do with prompt characters the model does not know",
            **choice(UNKNOWN_CHOICES),
        ),
    ] = "error",
    threads: Annotated[int, typer.Option(help="runtime threads")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON with timings")] = False,
    native_sampler: NativeSampler = False,
    regex: Regex = None,
    choice_: Choices = None,
    bias: Bias = None,
    presence_penalty: PresencePenalty = 0.0,
    frequency_penalty: FrequencyPenalty = 0.0,
    logprobs: Logprobs = None,
) -> None:
    """Generate text, streaming characters as they are produced."""
    if native_sampler:
        native(model, runtime, prompt, length, temperature, top_k, top_p, seed, num_samples,
               stop, unknown, as_json, regex, choice_ or [])  # fmt: skip
        return
    if logprobs is not None and not as_json:
        raise UsageError("--logprobs needs --json")
    # Bad options and prompts are refused before the prompt is echoed: stdout gets text or
    # nothing.
    generator = load(model, runtime=runtime, variant=variant, threads=threads)
    options = decode_options(
        length, temperature, top_k, top_p, stop, seed, num_samples,
        dict(parse_bias(bias or [], generator.index)), presence_penalty, frequency_penalty,
        regex, choice_ or (), logprobs,
    )  # fmt: skip
    compile_pattern(options, generator.vocab)  # a bad pattern: one line, before any output
    generator.encode(prompt, unknown)
    stream = num_samples == 1 and not as_json
    if stream:
        sys.stdout.write(prompt)
        sys.stdout.flush()

    def on_text(row: int, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    result = generator.generate(
        prompt, options=options, unknown=unknown, on_text=on_text if stream else None
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    elif stream:
        sys.stdout.write("\n")
    else:
        for i, text in enumerate(result.texts):
            typer.echo(f"--- sample {i + 1} ---\n{prompt}{text}")


def parse_bias(values: list[str], index: dict[str, int]) -> tuple[tuple[int, float], ...]:
    """`--bias 'e=-5,\\n=+2'` (repeatable) as (token id, bias) pairs; the character is
    written as Python writes it in a string (\\n, \\t, \\x2c), a literal comma as \\,."""
    pairs: dict[int, float] = {}
    for value in values:
        for item in re.split(r"(?<!\\),", value):
            char, equals, number = item.replace("\\,", ",").rpartition("=")
            try:
                char = codecs.decode(char, "unicode_escape") if "\\" in char else char
                bias = float(number)
            except (UnicodeDecodeError, ValueError):
                raise UsageError(f"--bias: {item!r} is not CHARACTER=NUMBER") from None
            if not equals or len(char) != 1:
                raise UsageError(f"--bias: {item!r} is not CHARACTER=NUMBER (one character)")
            if char not in index:
                raise UsageError(f"--bias: {char!r} is not in the model's vocabulary")
            pairs[index[char]] = bias
    return tuple(sorted(pairs.items()))


def native(
    model: Path | None,
    runtime: str,
    prompt: str,
    length: int,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    num_samples: int,
    stop: str | None,
    unknown: str,
    as_json: bool,
    regex: str | None,
    choices: list[str],
) -> None:
    """--native-sampler: the C decoder (char_lstm_decode.c) picks every character."""
    import random

    from toolkit.runtime.backends.c import CBackend
    from toolkit.runtime.pattern import compile_choice, compile_regex

    if runtime != "c":
        raise UsageError("--native-sampler needs --runtime c")
    if top_p != 1.0 or num_samples != 1 or stop is not None or as_json:
        raise UsageError("--native-sampler takes --temperature, --top-k and --seed, not "
                         "--top-p, --num-samples, --stop or --json")  # fmt: skip
    if regex is not None and choices:
        raise UsageError("give --regex or --choice, not both")
    if length < 0:
        raise UsageError(f"length must be >= 0, got {length}")
    generator = load(model, runtime="c")
    assert isinstance(generator.backend, CBackend)
    ids = generator.encode(prompt or generator.start_text, unknown)
    pattern = None
    if regex is not None:
        pattern = compile_regex(regex, generator.chars)
    elif choices:
        pattern = compile_choice(choices, generator.chars)
    if seed is None:
        seed = random.getrandbits(63)
    tokens = generator.backend.decode_native(ids, length, temperature, top_k, seed, pattern)
    sys.stdout.write(prompt + generator.decode(tokens) + "\n")
    sys.stdout.flush()
