"""tokenizer.json: other tools tokenize the model's text exactly as the model does."""

from __future__ import annotations

from pathlib import Path

import tokenizers
from conftest import COMMITTED_MODEL, manifest_json
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.files import sha256_bytes
from toolkit.runtime.manifest import Manifest

VOCAB = Manifest.read(COMMITTED_MODEL).vocabulary
TOKENIZER = tokenizers.Tokenizer.from_file(str(COMMITTED_MODEL / "tokenizer.json"))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(VOCAB.chars), max_size=200))
def test_any_text_gives_the_model_ids_and_decodes_back(text: str) -> None:
    ids = TOKENIZER.encode(text).ids
    assert ids == VOCAB.encode(text).tolist()
    assert TOKENIZER.decode(ids) == text


def test_corpus_and_whole_vocabulary(shakespeare_text: str) -> None:
    sample = shakespeare_text[:20_000]
    assert TOKENIZER.encode(sample).ids == VOCAB.encode(sample).tolist()
    assert TOKENIZER.get_vocab() == VOCAB.index
    assert TOKENIZER.decode(list(range(len(VOCAB)))) == "".join(VOCAB.chars)


def test_recorded_in_the_manifest(tiny_export: Path) -> None:
    """Every export writes it (and its checksum); the committed folder has it too."""
    for folder in (COMMITTED_MODEL, tiny_export):
        entry = manifest_json(folder)["tokenizer"]
        data = (folder / entry["file"]).read_bytes()
        assert sha256_bytes(data) == entry["sha256"] and len(data) == entry["bytes"]
    vocab = Manifest.read(tiny_export).vocabulary
    tiny = tokenizers.Tokenizer.from_file(str(tiny_export / "tokenizer.json"))
    text = "".join(vocab.chars) * 3
    assert tiny.encode(text).ids == vocab.encode(text).tolist()
