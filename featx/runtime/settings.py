"""Choices of the lower layers that `featx --help` shows without importing torch or h5py (the
modules that act on them do: featx.runtime.device, featx.store.merge). Tables of whole configs
live beside them: featx.extraction.settings, featx.probes.settings, featx.training.settings."""

DECODES = ("auto", "cpu", "gpu")  # where JPEG files are decoded (featx.runtime.device)
AMP_MODES = ("bf16", "fp16", "off")  # CUDA autocast precision of extraction and fine-tuning
MERGE_MODES = ("copy", "virtual")  # the layouts of a merged store (featx.store.merge)
