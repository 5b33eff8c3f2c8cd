"""What only development, the local stack and the tests use: synthetic media, dev models, fakes, the
embedded local stack and the demo. Never installed in an image: `pyproject.toml` excludes
`shared.dev` from the distribution and `.dockerignore` keeps it out of every build context
(tests/unit/test_packaging.py checks both)."""
