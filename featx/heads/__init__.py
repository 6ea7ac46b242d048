"""A trained head as a file: its kinds, metadata, backbone, scores and predictions."""
