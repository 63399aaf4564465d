"""Packaging hook (the rest is in pyproject.toml): the wheel carries the ready model.

`pip install "char-lstm-toolkit[onnx]"` then `toolkit generate` works from any folder: the
build copies exported/shakespeare into the package as toolkit/models/shakespeare, with the
files a runtime-only install uses (under 10 MB) and a manifest that lists just those.
"""

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL = Path(__file__).resolve().parent / "exported" / "shakespeare"
PACKAGED = ("model.onnx", "model.int8.onnx", "model.int8.tflite", "model.full-int8.tflite")


class BuildPyWithModel(build_py):
    def run(self) -> None:
        super().run()
        if not (MODEL / "manifest.json").exists():
            return
        target = Path(self.build_lib) / "toolkit" / "models" / "shakespeare"
        target.mkdir(parents=True, exist_ok=True)
        manifest = json.loads((MODEL / "manifest.json").read_text(encoding="utf-8"))
        manifest["artifacts"] = {
            name: entry for name, entry in manifest["artifacts"].items() if name in PACKAGED
        }
        for name in [*manifest["artifacts"], "README.md", "tokenizer.json"]:
            if (MODEL / name).exists():
                shutil.copyfile(MODEL / name, target / name)
        (target / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8"
        )


setup(cmdclass={"build_py": BuildPyWithModel})
