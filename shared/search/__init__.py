"""Search: find the moment in your media (issue 21). Per owner and spec version, hybrid (BM25 + vectors).

    engine.py    the SearchEngine interface (Row, Hit, spaces, kinds): write, delete, query, optimize
    lance.py     LanceSearch, its LanceDB implementation (a local folder or s3://)
    rows.py      rows from the pipeline's artifacts (pure; the text embedder injected)
    query.py     Searcher: validation, the ranked lists, reciprocal rank fusion, moment merging
    settings.py  SearchSettings: every bound and default
    indexer.py   ArtifactIndex: an item's rows from its artifacts, written in one batch (the pipeline's
                 SearchWriter, shared.pipeline.search_sync)
    indexes.py   Indexes (the tables of every spec version, warm), the owner's current version (its
                 search pointer), open_searcher: what `se search` opens
    service.py   SearchService: a query -> the owner's current version -> moments with links (the
                 search function and the admin console); api.py its Lambda handler

Nothing here imports LanceDB but lance.py (indexes.Indexes imports it on the first engine it opens), so
rows and queries stay testable without it.
"""

__all__ = ["Indexes", "open_searcher"]


def __getattr__(name: str):  # `from shared.search import open_searcher`, without importing it for rows.py
    if name in __all__:
        from shared.search import indexes

        return getattr(indexes, name)
    raise AttributeError(f"module 'shared.search' has no attribute {name!r}")
