"""The process around the work: atomic files, progress, devices, ranks, memory, hashes."""
