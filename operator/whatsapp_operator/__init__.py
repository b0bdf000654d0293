"""Kubernetes operator that manages WhatsApp instances in Evolution API."""

__version__ = "0.1.0"
