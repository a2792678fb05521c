"""Thin Prefect tasks over the chexflow library: retries, caching, artifacts."""
