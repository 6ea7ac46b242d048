"""Fitting heads on cached features: the batched sweep, selection, cross-validation, baselines."""
