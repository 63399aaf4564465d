"""Training: the Keras model, the loop (stateful truncated BPTT, validation, checkpoints,
resume), one or many workers, and the run directory it writes. `toolkit.train.loop.train`
is the entry point; TensorFlow is imported only once the input has been checked."""
