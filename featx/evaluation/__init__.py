"""Metrics, their bootstrap intervals, and the figures that show them."""
