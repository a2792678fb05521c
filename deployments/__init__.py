"""Prefect deployments of chexflow: prefect.yaml, work-pool templates, the deploy command."""
