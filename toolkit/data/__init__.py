"""Data: the corpus (bundled, a file or a folder, downloaded), prepared token ids on disk, and
each training step's windows. No TensorFlow here."""
