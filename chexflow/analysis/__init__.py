"""Embedding analysis: projections, cluster metrics and plots."""
