"""The search function's directory (shared.search.service.Directory): the owner's current version from
its search pointer, the hits' sources from the ledger.

    current_version  S3 GetObject  search/current/{owner}.json (shared.search.indexes.read_pointer: the
                     version whose tables hold every item, the one the pipeline switched to)
    media            BatchGetItem, item rows   pk "{owner}#{item}", sk "ITEM"   media_key, modality, status

The ledger read has a projection naming the attributes it needs, because the function's role
(template.yaml, SearchRole) may read only those (`dynamodb:Attributes`, `dynamodb:Select` conditions).

Eventually consistent (half the read cost): a new source reaches a warm container within the
service's cache time anyway. ClientError -> StoreError (retryable when throttled).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.clients import translate
from shared.errors import StoreError
from shared.pipeline.ledger import ITEM_SK, REMOVED, item_pk
from shared.pipeline.ledger_table import PK, SK
from shared.search.indexes import read_pointer
from shared.search.service import Media

if TYPE_CHECKING:
    from shared.aws.storage import Storage

ITEM_ATTRIBUTES = ("media_key", "modality", "status")
ATTRIBUTES = (PK, SK, *ITEM_ATTRIBUTES)  # all the role may read (template test)
BATCH = 100  # BatchGetItem's limit
UNPROCESSED_RETRIES = 3


def _s(value: Any) -> str | None:
    return value.get("S") if isinstance(value, dict) else None


class LedgerDirectory:
    def __init__(self, dynamodb: Any, table: str, storage: Storage) -> None:
        self.db = dynamodb
        self.table = table
        self.storage = storage  # the media bucket: the search pointers

    def current_version(self, owner_id: str) -> str | None:
        return read_pointer(self.storage, owner_id)

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
