"""Benchmarks: every runtime's step latency, generation speed, size, quality and process
start-up beside the Keras model, measured side by side; reports as JSON, Markdown and PNG."""
