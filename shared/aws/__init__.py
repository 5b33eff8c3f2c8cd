"""Adapters over boto3: one client per process (injected), AWS errors translated to domain errors."""
