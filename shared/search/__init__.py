"""Search: find the moment in your media (issue 21). Per owner and spec version, hybrid (BM25 + vectors).

    engine.py    the SearchEngine interface (Row, Hit, spaces, kinds): write, delete, query, optimize
    lance.py     LanceSearch, its LanceDB implementation (a local folder or s3://)
    rows.py      rows from the pipeline's artifacts (pure; the text embedder injected)
    query.py     Searcher: validation, the ranked lists, reciprocal rank fusion, moment merging
    settings.py  SearchSettings: every bound and default
    indexer.py   ArtifactIndex: an item's rows from its artifacts, written in one batch (the pipeline's
                 SearchWriter, shared.pipeline.search_sync)
    service.py   Indexes (the tables of every spec version, warm), open_searcher (an owner's current
                 version, from its search pointer): what the search function and `se search` open

Nothing here imports LanceDB but lance.py (service.Indexes imports it on the first engine it opens), so
rows and queries stay testable without it.
"""

__all__ = ["Indexes", "open_searcher"]


def __getattr__(name: str):  # `from shared.search import open_searcher`, without importing it for rows.py
    if name in __all__:
        from shared.search import service

        return getattr(service, name)
    raise AttributeError(f"module 'shared.search' has no attribute {name!r}")
