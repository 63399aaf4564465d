"""tokenizer.json: the model's vocabulary as a Hugging Face `tokenizers` file, so that other
tools (`tokenizers.Tokenizer.from_file`, `transformers.PreTrainedTokenizerFast`) turn text into
exactly the model's token ids: one token per character, ids in the manifest's order.

A BPE model with no merges splits its input into characters and maps each to its id; with no
normalizer or pre-tokenizer, spaces and line breaks are tokens like any other character. The
`Fuse` decoder joins tokens without the spaces a decoder-less tokenizer would put between them.
"""

from __future__ import annotations

import json
from typing import Any

from toolkit.files import sha256_bytes
from toolkit.vocabulary import Vocabulary

TOKENIZER_NAME = "tokenizer.json"


def tokenizer_dict(vocab: Vocabulary) -> dict[str, Any]:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,  # a character outside the vocabulary has no id: it is dropped
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {ch: i for i, ch in enumerate(vocab.chars)},
            "merges": [],
        },
    }


def tokenizer_json(vocab: Vocabulary) -> str:
    return json.dumps(tokenizer_dict(vocab), indent=2, ensure_ascii=False) + "\n"


def tokenizer_entry(vocab: Vocabulary) -> dict[str, Any]:
    """The manifest's record of tokenizer.json (it is a function of the vocabulary)."""
    data = tokenizer_json(vocab).encode("utf-8")
    return {"file": TOKENIZER_NAME, "bytes": len(data), "sha256": sha256_bytes(data)}
