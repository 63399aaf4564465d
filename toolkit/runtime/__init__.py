"""The lightweight runtime: numpy plus onnxruntime or LiteRT. Never imports TensorFlow.

from toolkit.runtime import load
gen = load("exported/shakespeare", runtime="onnx")
print(gen.generate("ROMEO:", length=200, temperature=0.8).texts[0])
"""

from toolkit.runtime.generator import GenerationResult, Generator, Session, load

__all__ = ["GenerationResult", "Generator", "Session", "load"]
