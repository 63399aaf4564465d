"""Export: a trained run (or an exported folder's fp32 weights) to single-step graphs with
explicit state, one module per target, each described, converted and validated the same way
(`exporter.export_run`)."""
