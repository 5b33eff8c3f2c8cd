"""The operator's admin console (`se admin`): a static page on 127.0.0.1 and a SigV4-signing proxy to
the `reprocess` function URL (see server.py)."""
