"""featx: run each frozen backbone once into an HDF5 feature store, then train heads in seconds."""

__version__ = "0.1.0"
