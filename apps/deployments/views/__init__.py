"""Deployment pages, one module per feature."""
