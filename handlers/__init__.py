"""Entry points: thin shims over the `shared` package."""
