"""Nearest-neighbour search over feature rows: exact blocks and the FAISS index."""
