"""Model registry, loaders and backends."""
