"""The search function's reads of the ledger (shared.search.service.Directory over DynamoDB).

Two reads, each with a projection naming the attributes it needs, because the function's role
(template.yaml, SearchRole) may read only those (`dynamodb:Attributes`, `dynamodb:Select` conditions):

    current_version  GetItem, the owner's row  pk "{owner}#~", sk "MANIFEST"    current_version
    media            BatchGetItem, item rows   pk "{owner}#{item}", sk "ITEM"   media_key, modality, status

Eventually consistent (half the read cost): the version switch and a new source reach a warm
container within the service's cache time anyway. ClientError -> StoreError (retryable when throttled).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.clients import translate
from shared.errors import StoreError
from shared.pipeline.ledger import ITEM_SK, MANIFEST_SK, REMOVED, item_pk
from shared.pipeline.ledger_table import PK, SK
from shared.search.service import Media

VERSION_ATTRIBUTE = "current_version"
ITEM_ATTRIBUTES = ("media_key", "modality", "status")
ATTRIBUTES = (PK, SK, VERSION_ATTRIBUTE, *ITEM_ATTRIBUTES)  # all the role may read (template test)
BATCH = 100  # BatchGetItem's limit
UNPROCESSED_RETRIES = 3


def _s(value: Any) -> str | None:
    return value.get("S") if isinstance(value, dict) else None


class LedgerDirectory:
    def __init__(self, dynamodb: Any, table: str) -> None:
        self.db = dynamodb
        self.table = table

    def current_version(self, owner_id: str) -> str | None:
        try:
            r = self.db.get_item(
                TableName=self.table,
                Key={PK: {"S": item_pk(owner_id, "~")}, SK: {"S": MANIFEST_SK}},
                ProjectionExpression="#v",
                ExpressionAttributeNames={"#v": VERSION_ATTRIBUTE},
            )
        except (ClientError, BotoCoreError) as e:
            raise translate(e, "ledger read") from e
        return _s(r.get("Item", {}).get(VERSION_ATTRIBUTE))

    def media(self, owner_id: str, item_ids: Sequence[str]) -> dict[str, Media]:
        out: dict[str, Media] = {}
        ids = list(dict.fromkeys(item_ids))
        for start in range(0, len(ids), BATCH):
            keys = [{PK: {"S": item_pk(owner_id, i)}, SK: {"S": ITEM_SK}} for i in ids[start : start + BATCH]]
            for row in self._batch_get(keys):
                pk = _s(row.get(PK))
                if pk is None:
                    continue
                out[pk.split("#", 1)[1]] = Media(
                    key=_s(row.get("media_key")),
                    modality=_s(row.get("modality")) or "",
                    removed=_s(row.get("status")) == REMOVED,
                )
        return out

    def _batch_get(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        names = {f"#a{i}": a for i, a in enumerate((PK, *ITEM_ATTRIBUTES))}
        request = {
            self.table: {
                "Keys": keys,
                "ProjectionExpression": ", ".join(names),
                "ExpressionAttributeNames": names,
            }
        }
        rows: list[dict[str, Any]] = []
        for attempt in range(UNPROCESSED_RETRIES + 1):
            try:
                r = self.db.batch_get_item(RequestItems=request)
            except (ClientError, BotoCoreError) as e:
                raise translate(e, "ledger read") from e
            rows += r.get("Responses", {}).get(self.table, [])
            left = r.get("UnprocessedKeys", {}).get(self.table)
            if not left:
                return rows
            request = {self.table: left}
            time.sleep(0.05 * 2**attempt)  # throttled: DynamoDB's advice is to back off, then retry
        err = StoreError("ledger read failed: keys left unprocessed")
        err.retryable = True
        raise err
