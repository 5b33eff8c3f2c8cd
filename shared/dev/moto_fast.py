"""moto's server with its DynamoDB emulator costs removed (dev-only: the local stack and the tests).

moto 5.2 encodes every response through a generic, botocore-model-driven serializer. For DynamoDB that
walks each attribute value as a 10-member structure (S, N, B, SS, NS, BS, M, L, NULL, BOOL), looking
each member up through alias providers: about 0.5 ms per attribute, so a 2,000-row index query spends
~9 s of its ~11 s encoding (cProfile: `moto/core/serialize.py` get_possible_keys/get_value), and every
ledger read of the local stack is bound by it. An attribute value already is its wire form once its
binary members are base64-encoded (DynamoDB's JSON protocol), so `install()` encodes the
`AttributeValue` shape in one recursive pass and leaves every other shape, every error and every
other service to moto's serializer. Queries read only the rows that can match, and results are
converted in one pass (`_fast_queries`, `_fast_results`: same rows, same order). `install()` patches
moto for the whole process, for good. tests/unit/pipeline/test_moto_fast.py checks that responses read
back the same values, rows and order as moto's own.

    python -m shared.dev.moto_fast -H 127.0.0.1 -p 5000     # moto.server's own arguments
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
from decimal import Decimal
from typing import Any

_installed = False
_DYNAMODB = ("dynamodb", "dynamodbstreams")  # other services have shapes named AttributeValue too


def _b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode("utf-8") if isinstance(value, str) else value).decode("ascii")


def encode_attribute(value: Any) -> Any:
    """One DynamoDB attribute value ({"S": ...}, {"M": {...}}, ...) as DynamoDB's JSON protocol sends it."""
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError("an attribute value has exactly one type member")
    ((kind, inner),) = value.items()
    if kind == "M":
        return {"M": {k: encode_attribute(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [encode_attribute(v) for v in inner]}
    if kind == "B":
        return {"B": _b64(inner)}
    if kind == "BS":
        return {"BS": [_b64(v) for v in inner]}
    return {kind: inner}


def _dynamodb(serializer: Any) -> bool:
    """Whether a moto serializer is answering DynamoDB (other services have shapes named alike)."""
    return serializer.operation_model.service_model.service_name in _DYNAMODB


def install() -> None:
    """Encode DynamoDB's AttributeValue shape directly in moto's JSON serializer (idempotent)."""
    global _installed
    if _installed:
        return
    from moto.core.serialize import BaseJSONSerializer

    generic = BaseJSONSerializer._serialize_type_structure

    def _serialize_type_structure(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            shape.name == "AttributeValue"
            and key
            and isinstance(value, dict)
            and len(value) == 1
            and _dynamodb(self)
        ):
            self._default_serialize(serialized, encode_attribute(value), shape, key)
            return
        generic(self, serialized, value, shape, key)

    generic_map = BaseJSONSerializer._serialize_type_map

    def _serialize_type_map(self: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        # an item ({name: AttributeValue}): every value encoded in one pass, not one dispatch each
        if getattr(shape.value, "name", None) == "AttributeValue" and _dynamodb(self):
            try:
                encoded = {k: encode_attribute(v) for k, v in value.items()}
            except (ValueError, AttributeError, TypeError):
                pass  # not plain attribute values: moto's own path (and its errors)
            else:
                self._default_serialize(serialized, encoded, shape, key)
                return
        generic_map(self, serialized, value, shape, key)

    BaseJSONSerializer._serialize_type_structure = _serialize_type_structure  # type: ignore[method-assign]
    BaseJSONSerializer._serialize_type_map = _serialize_type_map  # type: ignore[method-assign]
    _fast_results()
    _fast_queries()
    _fast_query_responses()
    _fast_transactions()
    _installed = True


def _fast_results() -> None:
    """moto turns a DynamoDB result's DynamoType values into plain attribute values with a generic
    recursive walk (isinstance checks and a to_json() probe at every level): ~27% of an index query's
    server time. The same conversion, DynamoType first."""
    import moto.dynamodb.responses as responses
    from moto.dynamodb.models.dynamo_type import DynamoType

    generic = responses.dynamo_to_dict

    def attribute(obj: Any) -> dict[str, Any]:
        kind, value = obj.type, obj.value
        if kind == "M":
            return {"M": {k: to_dict(v) for k, v in value.items()}}
        if kind == "L":
            return {"L": [to_dict(v) for v in value]}
        if kind in ("B", "BS"):
            return generic(obj)  # base64-decoded for the serializer, as moto does
        return {kind: list(value) if isinstance(value, list) else value}

    def to_dict(obj: Any) -> Any:
        if type(obj) is DynamoType:
            return attribute(obj)
        if isinstance(obj, dict) and not hasattr(obj, "to_json"):  # items are a dict subclass
            return {k: to_dict(v) for k, v in obj.items()}
        if type(obj) is list:
            return [to_dict(v) for v in obj]
        return generic(obj)

    responses.dynamo_to_dict = to_dict


_QUERY_KEYS = frozenset({"Count", "ScannedCount", "Items", "LastEvaluatedKey", "ConsumedCapacity"})
_responding = threading.local()  # set while a Query's handler runs under serve()


def _fast_query_responses() -> None:
    """Under serve(), a Query's answer is written as JSON in one pass from moto's values: moto converts
    them to plain attribute values (`dynamo_to_dict`) and then walks that through its shape-driven
    serializer, ~30% of an index page's server time. Strings, numbers, booleans and nulls are written
    as they are; any other value goes through the same conversion and `encode_attribute` that the
    serializer's AttributeMap shortcut uses, so the body is the one moto sends. Anything else (a
    result with other keys, an error) takes moto's own path."""
    import moto.dynamodb.responses as responses
    from moto.dynamodb.models.dynamo_type import DynamoType

    result_init, query = responses.DynamoResult.__init__, responses.DynamoHandler.query

    def deferred_init(self: Any, result: object) -> None:
        if getattr(_responding, "query", False):
            self._result = result  # converted by fast_response, or below if it cannot answer
            return
        result_init(self, result)

    def value(v: Any) -> Any:
        if type(v) is DynamoType and v.type in ("S", "N", "BOOL", "NULL"):
            return {v.type: v.value}
        return encode_attribute(responses.dynamo_to_dict(v))

    def fast_response(self: Any) -> Any:
        if not _serialized:
            return query(self)
        _responding.query = True
        try:
            result = query(self)
        finally:
            _responding.query = False
        body = getattr(result, "result", None)
        if isinstance(body, dict) and set(body) <= _QUERY_KEYS:
            try:
                out = dict(body)
                if "Items" in out:
                    out["Items"] = [{k: value(v) for k, v in item.items()} for item in body["Items"]]
                if "LastEvaluatedKey" in out:
                    out["LastEvaluatedKey"] = {k: value(v) for k, v in body["LastEvaluatedKey"].items()}
                return json.dumps(out)
            except (ValueError, TypeError, AttributeError):
                pass
        if isinstance(result, responses.DynamoResult):
            result._result = responses.dynamo_to_dict(body)  # what its __init__ would have done
        return result

    responses.DynamoResult.__init__ = deferred_init  # type: ignore[method-assign]
    responses.DynamoHandler.query = fast_response  # type: ignore[method-assign]


_query = threading.local()  # the current thread's query: its partition, index keys, row sizes
_serialized = False  # True once serve() runs DynamoDB requests one at a time


def _same(have: Any, want: Any) -> bool:
    """DynamoType's equality for key values (same type, same cast value): key attributes are S, N or B,
    and only numbers can be equal in two spellings ("1" and "1.0"), so only they are cast."""
    return (
        have is not None
        and have.type == want.type
        and (have.value == want.value or (want.type == "N" and have == want))
    )


def _in_range(have: Any, comparison: str, bounds: list[Any]) -> bool:
    """DynamoType.compare (a key condition on a range key), a string BETWEEN compared in place."""
    if have is None:
        return False
    if comparison == "BETWEEN" and have.type == "S" and all(b.type == "S" for b in bounds):
        return bounds[0].value <= have.value <= bounds[1].value
    return bool(have.compare(comparison, bounds))


def _key_value(v: Any) -> Any:
    """A key attribute's cast value (DynamoType.cast_value: S and B as they are, N as a Decimal)."""
    return Decimal(v.value) if v.type == "N" else v.value


def _item_size(item: Any, size: Any) -> int:
    """moto's Item.size (`size`), a row of strings and numbers summed in place: a string is its UTF-8
    length (DynamoType.size's), a number what moto's own DynamoType.size says (5.2.6 sizes it as
    DynamoDB stores it, no longer as its text's length)."""
    total = 0
    for key, value in item.attrs.items():
        kind, v = value.type, value.value
        if kind == "S" and type(v) is str:
            total += len(key.encode()) + len(v.encode())
        elif kind == "N" and type(v) is str:
            total += len(key.encode()) + value.size()
        else:
            return size(item)
    return total


def _fast_queries() -> None:
    """moto's Table.query reads the whole table for every query: `all_items()` sorts every row by
    DynamoType comparisons (each a Python call computing `cast_value`), then a table query keeps the
    rows of its one partition and an index query sorts its matches the same way again. On a 7,000-row
    ledger that made one `rows()` (a query of one item's partition) ~190 ms of server CPU and every
    owner-index page ~0.3 s before its first row. Same results, in the same order, cheaper:
    - a table query reads only its partition (moto keeps rows by partition: `Table.items[hash]`),
      an index query only the rows of its hash key (moto sorts both kinds of matches itself) and, with
      a key condition on its range key, only the rows in that range;
    - sorts use the keys' cast values (what DynamoType's own comparisons compare; key attributes
      have one type, so the order is the same);
    - a query's page is not deep-copied under serve()'s lock, each row is sized once, and a
      projection of plain names takes the values as they are instead of a JSON round trip."""
    from moto.dynamodb.models.dynamo_type import Item, LimitedSizeDict
    from moto.dynamodb.models.table import Table

    query, all_items, item_copy, item_size = Table.query, Table.all_items, Item.__deepcopy__, Item.size
    item_project = Item.project

    def fast_query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        # DynamoDBBackend.query passes index_name as the 8th positional argument
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        one_partition = not index_name and hash_key is not None and self.range_key_attr
        _query.key = hash_key if one_partition else None
        # an index query keeps the rows whose index hash keys equal these (moto checks each row with
        # DynamoType comparisons, then sorts the matches by index and table keys: a total order)
        _query.index_keys = (kwargs.get("hash_key_conditions") or None) if index_name else None
        _query.index_range = None
        conditions = kwargs.get("range_key_conditions") or []
        if _query.index_keys and len(conditions) == 1:
            # ... and of those, the rows in its key range. moto compares every match with the range
            # after sizing it for the page limit, so a range read cost a read of the whole key; DynamoDB
            # reads (and counts toward the 1 MB page) only the range. (moto compares this attribute.)
            _query.index_range = conditions[0]
        _query.sizes = {}
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _query.key = _query.index_keys = _query.index_range = _query.sizes = None

    def fast_copy(self: Any, memo: Any) -> Any:
        # a query deep-copies its page before projecting it; the page is only read from there on
        # (projections build new items), so inside a query the stored item stands for its copy, where
        # no write can run meanwhile (serve(): one DynamoDB request at a time)
        if _serialized and getattr(_query, "sizes", None) is not None:
            return self
        return item_copy(self, memo)

    def fast_size(self: Any) -> int:
        sizes = getattr(_query, "sizes", None)  # a query sizes each row twice (page limit, total)
        if sizes is None:
            return item_size(self)
        size = sizes.get(id(self))
        if size is None:
            size = sizes[id(self)] = _item_size(self, item_size)
        return size

    def fast_all_items(self: Any) -> list[Any]:
        key = getattr(_query, "key", None)
        if key is not None:  # inside a table query of one partition: only its rows can match
            return list(self.items.get(key, {}).values())  # (moto sorts them by range key)
        if not self.range_key_attr:
            return all_items(self)
        items = [item for part in self.items.values() for item in part.values()]
        wanted = getattr(_query, "index_keys", None)
        if wanted is not None:  # inside an index query: its matches are sorted again, by the index
            if len(wanted) == 1:  # one hash attribute (the common index): no generator per row
                ((a, v),) = wanted
                items = [item for item in items if _same(item.attrs.get(a), v)]
            else:
                items = [item for item in items if all(_same(item.attrs.get(a), v) for a, v in wanted)]
            in_range = getattr(_query, "index_range", None)
            if in_range is not None:
                attr, comparison, bounds = in_range
                items = [item for item in items if _in_range(item.attrs.get(attr), comparison, bounds)]
            return items
        return sorted(items, key=lambda x: (x.hash_key.cast_value, x.range_key.cast_value))

    def sorted_items(self: Any, hash_attrs: list[str], range_attrs: list[Any], items: list[Any]) -> list:
        attrs = self._generate_attr_to_sort_by(hash_attrs, range_attrs)
        items.sort(key=lambda x: tuple(_key_value(x.attrs[a]) for a in attrs))
        return items

    def fast_project(self: Any, projection_expressions: list[list[str]]) -> Any:
        # top-level names only (a ProjectionExpression of plain attributes): the named attribute values
        # as they are, instead of moto's JSON round trip of the whole row for each name
        if not all(len(p) == 1 and isinstance(p[0], str) and "[" not in p[0] for p in projection_expressions):
            return item_project(self, projection_expressions)
        out = Item.__new__(Item)
        out.hash_key, out.range_key = self.hash_key, self.range_key
        out.attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(out.attrs)
        for (name,) in projection_expressions:
            if name in self.attrs:
                dict.__setitem__(out.attrs, name, self.attrs[name])
        return out

    Table.query = fast_query  # type: ignore[method-assign]
    Item.project = fast_project  # type: ignore[method-assign]
    Item.__deepcopy__ = fast_copy  # type: ignore[method-assign]
    Item.size = fast_size  # type: ignore[method-assign]
    Table.all_items = fast_all_items  # type: ignore[method-assign]
    Table.sorted_items = sorted_items  # type: ignore[method-assign]


def _fast_transactions() -> None:
    """moto's transact_write_items deep-copies the whole table once per item of the transaction (its
    rollback point), writes each item right after checking its condition, and on any failure puts the
    copy back, which also undoes every write that other requests made meanwhile. DynamoDB checks every
    condition, then writes all or nothing. Here: the same checks, errors and cancellation reasons, in
    the same order, all before anything is written (keys are unique in a transaction, so no item's
    condition can see another's write); then the writes, with a copy of only the items they touch, put
    back if one of them raises (an error moto finds only while writing, e.g. an invalid update)."""
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        ConditionalCheckFailed,
        MockValidationException,
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )
    from moto.dynamodb.models import DynamoDBBackend

    motos = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        if any(len(item) > 1 for item in transact_items):
            raise TransactWriteSingleOpException
        seen: set[tuple[str, str]] = set()
        planned: list[tuple[int, str, dict[str, Any], str, dict[str, Any], Any]] = []
        errors: list[Any] = []
        for item in transact_items:
            op_type, op = next(iter(item.items()))
            original = None
            try:
                if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                    raise ValueError("Unsupported transaction operation")
                table_name = op["TableName"]
                if op_type == "Put":
                    table = self.get_table(table_name)
                    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                    if table.range_key_attr is not None:
                        key[table.range_key_attr] = op["Item"][table.range_key_attr]
                else:
                    key = op["Key"]
                unique = (str(table_name), str(dict(sorted(key.items()))))
                if unique in seen:
                    raise MultipleTransactionsException()
                seen.add(unique)
                current = self.get_item(table_name, key)
                condition = op.get("ConditionExpression")
                if condition is not None:
                    check = get_filter_expression(
                        condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                    )
                    if not check.expr(current):
                        if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                            original = current.to_json()["Attributes"]
                        raise ConditionalCheckFailed(item=original)
                planned.append((len(errors), op_type, op, table_name, key, current))
                errors.append((None, None, None))
            except (MultipleTransactionsException, MockValidationException):
                raise  # nothing is written yet
            except ConditionalCheckFailed as e:
                errors.append(("ConditionalCheckFailed", str(e.message), original))
            except Exception as e:  # moto reports any other failure as a reason
                errors.append((type(e).__name__, str(e), original))
        if any(code is not None for code, _, _ in errors):
            raise TransactionCanceledException(errors)
        written: list[tuple[str, dict[str, Any], Any]] = []
        failed = -1
        try:
            for failed, op_type, op, table_name, key, current in planned:  # noqa: B007 (read below)
                if op_type == "ConditionCheck":
                    continue
                written.append((table_name, key, current.to_json()["Attributes"] if current else None))
                names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    self.put_item(table_name, op["Item"])
                elif op_type == "Delete":
                    self.delete_item(table_name, key)
                else:
                    self.update_item(
                        table_name,
                        key,
                        update_expression=op["UpdateExpression"],
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
        except Exception as e:
            for table_name, key, before in reversed(written):
                if before is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, before)
            if isinstance(e, MockValidationException):
                raise
            reasons = [(None, None, None)] * len(errors)
            reasons[failed] = (type(e).__name__, str(e), None)
            raise TransactionCanceledException(reasons) from e

    transact_write_items.motos = motos  # type: ignore[attr-defined]  (the tests compare with it)
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def serve(host: str, port: int, threads: int = 16) -> None:
    """moto's WSGI app (the one `moto.server` runs) under waitress: HTTP/1.1 keep-alive, as AWS's
    endpoints answer. werkzeug's development server, which `moto.server` uses, closes every connection
    (it drains the socket after each response), so each boto3 call paid for a new TCP connection: about
    a third of botocore's CPU per call here. One difference, stated: like werkzeug's server without
    moto's request handler, waitress drops request headers whose names contain an underscore (S3
    user metadata such as `x-amz-meta-my_key`; nothing here sends one)."""
    import waitress
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    os.environ.setdefault("MOTO_PORT", str(port))
    moto_app = DomainDispatcherApplication(create_backend_app)
    moto_app.debug = True  # type: ignore[attr-defined]

    dynamodb = threading.Lock()
    global _serialized
    _serialized = True

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        # moto reads the undecoded request target from werkzeug's RAW_URI (S3 keys with %XX or "?"
        # in them); waitress names it REQUEST_URI
        environ.setdefault("RAW_URI", environ.get("REQUEST_URI", ""))
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            # DynamoDB applies each write atomically (its condition is checked against the latest
            # item); moto does not lock, so two concurrent conditional writes can both pass on the
            # same old item. One DynamoDB request at a time restores that (moto holds the GIL anyway).
            with dynamodb:
                return list(moto_app(environ, start_response))
        return moto_app(environ, start_response)

    _continue_keeps_complete_requests()
    waitress.serve(app, host=host, port=port, threads=threads, connection_limit=1000, ident=None, _quiet=True)


def _continue_keeps_complete_requests() -> None:
    """waitress (3.0.2) answers `Expect: 100-continue` as soon as a request's headers are in, and then
    marks the request incomplete (to wait for its body). A request with no body (Content-Length: 0:
    botocore sends the header with every PutObject, an empty file's too) is complete at its headers,
    so it was never handed to the app: the client got "100 Continue" and then nothing until its read
    timeout. Here the 100 is still sent (as werkzeug's server does), and a request that was complete
    stays complete. Patched in the process that runs serve() only."""
    from waitress.channel import HTTPChannel

    send_continue = HTTPChannel.send_continue
    if getattr(send_continue, "keeps_complete", False):
        return

    def keeping(self: Any) -> None:
        complete = self.request.completed
        send_continue(self)
        self.request.completed = complete

    keeping.keeps_complete = True  # type: ignore[attr-defined]
    HTTPChannel.send_continue = keeping  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="moto's server for the local stack (see module docs)")
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args(argv if argv is not None else sys.argv[1:])
    install()
    serve(args.host, args.port, args.threads)


if __name__ == "__main__":
    main()
