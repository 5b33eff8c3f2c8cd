"""Search: find the moment in your media (issue 21). Per owner and spec version, hybrid (BM25 + vectors).

    engine.py    the SearchEngine interface (Row, Hit, spaces, kinds): write, delete, query, optimize
    lance.py     LanceSearch, its LanceDB implementation (a local folder or s3://)
    rows.py      rows from the pipeline's artifacts (pure; the text embedder injected)
    query.py     Searcher: validation, the ranked lists, reciprocal rank fusion, moment merging
    settings.py  SearchSettings: every bound and default

Nothing here imports LanceDB but lance.py, so rows and queries stay testable without it.
"""
