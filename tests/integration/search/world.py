"""A search API world on real parts, for the search function's and the admin console's tests: moto (S3 with
the media, the ledger table built from template.yaml's keys, written by the pipeline's own Ledger), a
LanceDB index on a local folder, the SearchService built by shared.search.api.service_from_env from the
search function's template environment (the dev MiniLM and CLIP text tower on ONNX Runtime)."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from cfnlint.decode import decode

from shared.aws.ledger import Ledger
from shared.dev.localstack import REGION, MotoServer
from shared.search.api import SearchApiSettings, build_handler, service_from_env
from shared.settings import DEFAULT_MODEL_DIR, REPO_ROOT
from tests.unit.lambda_text.fakes import LambdaContext

VERSION = "2026-12-01-search1"


def template_env() -> dict[str, str]:
    """SearchFunction's variables with parameter defaults; refs to resources left for the caller."""
    tpl, matches = decode(str(REPO_ROOT / "template.yaml"))
    assert not matches
    raw = tpl["Resources"]["SearchFunction"]["Properties"]["Environment"]["Variables"]
    return {k: v for k, v in raw.items() if isinstance(v, str)}


class World:
    """moto (S3 + the ledger table built from template.yaml's keys), an index folder, the handler."""

    def __init__(self, moto: MotoServer, tmp: Path) -> None:
        self.s3, db = moto.client("s3"), moto.client("dynamodb")
        # moto keeps one backend per process (every in-process server shares it): names of this world's own
        tag = uuid.uuid4().hex[:8]
        self.bucket, self.table = f"search-api-media-{tag}", f"search-api-ledger-{tag}"
        self.s3.create_bucket(Bucket=self.bucket)
        tpl, _ = decode(str(REPO_ROOT / "template.yaml"))
        props = tpl["Resources"]["LedgerTable"]["Properties"]
        db.create_table(
            TableName=self.table,
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
            BillingMode=props["BillingMode"],
        )
        self.ledger = Ledger(db, self.table)
        self.index = tmp / "index"
        self.env = {
            **template_env(),
            "MEDIA_BUCKET": self.bucket,
            "LEDGER_TABLE": self.table,
            "SEARCH_INDEX_URI": str(self.index),
            "SEARCH_CACHE_S": "0",  # these tests switch versions and remove items between queries
            "MODEL_DIR": str(DEFAULT_MODEL_DIR),
            "TEXT_PRECISION": "fp32",
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        self.settings = SearchApiSettings.from_env(self.env)
        self.service = service_from_env(self.env)
        self.log = io.StringIO()
        self.handler = build_handler(
            self.service,
            self.settings,
            # a Logger of a service name already set up keeps its first stream: one name per world
            logger=Logger(service=f"search-it-{tag}", stream=self.log),
            metrics=Metrics(namespace="ServerlessEmbeddingsTest", service="search-it"),
        )

    def upload(
        self, owner: str, item: str, file: str, modality: str, body: bytes, content_type: str = "video/mp4"
    ) -> None:
        key = f"uploads/{owner}/{item}/{file}"
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        self.ledger.record_media(
            owner, item, kind="upload", modality=modality, key=key, etag="e", size=len(body),
            mtime="2026-12-01T00:00:00.000Z", media_hash=f"h-{item}", seq=None,
        )  # fmt: skip

    def switch(self, owner: str, version: str) -> None:
        """The owner's queries read `version` from now on: its search pointer, as the sweeper writes it
        once that version's tables hold every item."""
        from shared.aws.storage import Storage
        from shared.pipeline.search_sync import write_search_pointer

        write_search_pointer(Storage(self.s3, self.bucket), owner, version, "2026-12-01T00:00:00.000Z")

    def engine(self, version: str = VERSION) -> Any:
        """The service's own engine of `version` (a second LanceSearch would see its writes only after
        read_consistency_s)."""
        return self.service.searchers(version).engine

    def call(self, event: Any) -> tuple[int, dict]:
        out = self.handler(event, LambdaContext())
        if "statusCode" in out:
            return out["statusCode"], json.loads(out["body"])
        return (400 if "error" in out else 200), out
