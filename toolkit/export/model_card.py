"""The model card: README.md of an exported folder, written from its manifest at every export.

What the model is, how it was trained, each file with its size and validation figures, and
how to use it. Everything comes from manifest.json, so the card never disagrees with it.
"""

from __future__ import annotations

from typing import Any

from toolkit.runtime.manifest import ARTIFACT_FILES, Manifest
from toolkit.runtime.targets import file_for, generate_flags

CARD_NAME = "README.md"


def model_card(manifest: Manifest, folder: str) -> str:
    m = manifest.model
    source = manifest.source
    loss = source.get("best_val_loss")
    bpc = source.get("best_val_bpc")
    lines = [
        f"# {manifest.name}: a character-level LSTM, one step per character",
        "",
        f"A {m.layers} × {m.units} LSTM (embedding {m.embedding_dim}) over "
        f"{m.vocab_size} characters, exported by char-lstm-toolkit as a single-step graph "
        "with explicit state: `token` [batch] int32, `h`, `c` [layers, batch, units] float32 → "
        "`logits` [batch, vocab], `h_out`, `c_out`. Start from zeros and feed the state back. "
        "`manifest.json` holds the vocabulary (token id = index), tensor names, shapes and "
        "checksums.",
        "",
        "## Training",
        "",
        f"- Command: `{source.get('train_command') or 'unknown'}`",
        f"- Data: {source.get('data') or 'tiny Shakespeare (bundled with the toolkit)'}",
        f"- Preset: {source.get('preset') or '–'}; steps: {source.get('steps') or '–'}",
    ]
    if loss is not None:
        lines.append(
            f"- Best validation loss: {loss:.4f} nats/char ({bpc:.3f} bits/char), over the "
            "held-out end of the corpus with the state carried"
        )
    lines += [
        "",
        "## Files",
        "",
        "| file | format | quantization | size | validation bits/char | against | for |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for name, entry in manifest.artifacts.items():
        v = entry.validation or {}
        key = (entry.format, entry.quantization)
        figure = (
            f"{v['exported_bpc']:.4f} ({(v['bpc_ratio'] - 1) * 100:+.2f}%)"
            if v.get("exported_bpc")
            else "–"
        )
        lines.append(
            f"| `{name}` | {entry.format} | {entry.quantization} | "
            f"{entry.bytes / 1024:,.0f} KiB | {figure} | {v.get('reference', 'Keras') if v else '–'} | "
            f"{file_for(*key).use if key in ARTIFACT_FILES else ''} |"
        )
    micro = next((e.micro for e in manifest.artifacts.values() if e.micro), None)
    if manifest.tokenizer:
        lines += [
            "",
            f"`{manifest.tokenizer['file']}` is the vocabulary as a Hugging Face `tokenizers` "
            "file (one token per character, ids as the manifest's): "
            f'`tokenizers.Tokenizer.from_file("{manifest.tokenizer["file"]}")` encodes text to '
            "the model's token ids.",
        ]
    lines += [
        "",
        "Validation feeds held-out text through each file, carrying the state, and compares "
        "with the reference: fp32 files must match every logit within 1e-4, quantized ones keep "
        "bits/char within the stated tolerance.",
        "",
        "## Use",
        "",
        "```bash",
        'pip install "char-lstm-toolkit[onnx]"        # or [tflite], [micro]',
        f'toolkit generate {folder} --prompt "ROMEO:" --temperature 0.8 --length 300',
    ]
    for name, entry in manifest.artifacts.items():
        if entry.quantization != "none":
            flags = generate_flags(file_for(entry.format, entry.quantization))
            lines.append(f"toolkit generate {folder} {flags}   # {name}")
    if any(e.format == "onnx" for e in manifest.artifacts.values()):
        lines.append(f"toolkit web {folder} --serve           # in the browser")
    lines += [
        "```",
        "",
        "```python",
        "from toolkit.runtime import load",
        "",
        f'gen = load("{folder}", runtime="onnx")',
        'print(gen.generate("ROMEO:", length=200, temperature=0.8, seed=1).texts[0])',
        "```",
    ]
    lines += _device_sections(manifest, folder, micro)
    return "\n".join(lines) + "\n"


def _device_sections(manifest: Manifest, folder: str, micro: Any) -> list[str]:
    """The microcontroller's part of the card: the full-int8 model and the C target."""
    lines: list[str] = []
    if micro:
        lines += [
            "",
            "## On a microcontroller",
            "",
            f"`model.full-int8.tflite` is also in `model_data.cc` / `model_data.h`: "
            f"{micro['flash_bytes']:,} bytes of flash, a {micro['arena_bytes']:,}-byte tensor "
            f"arena (measured in TensorFlow Lite Micro's interpreter), ops "
            f"{', '.join(micro['ops'])}. Inputs in order: "
            f"{', '.join(t['name'] for t in micro['inputs'])}; outputs: "
            f"{', '.join(t['name'] for t in micro['outputs'])}. The header has the "
            "quantization of each and how to carry the int8 state.",
        ]
    c = manifest.artifacts.get("char_lstm.c")
    if c is not None and isinstance(c.extra.get("c"), dict):
        lines += [
            "",
            "`char_lstm.c` / `char_lstm.h` are the same model as plain C99 (no dependencies, no "
            f"malloc, no floating point): {c.extra['c']['flash_bytes']:,} bytes of constants "
            f"in flash, a {c.extra['c']['ram_bytes']:,}-byte state struct in RAM, bit-exact to "
            "TensorFlow Lite Micro. `toolkit firmware "
            f"{folder} --board mps2-an386 --out fw --run` tries it on an emulated Cortex-M4.",
        ]
    return lines
