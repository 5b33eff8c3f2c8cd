"""The local stack's commands (`se stack up`, `se upload`, `se status`, `se invoke`, `se demo`).

`se stack up` writes its endpoints to .cache/stack/endpoints.json; the other commands read them
there (or use AWS_ENDPOINT_URL / MEDIA_BUCKET / LEDGER_TABLE from the environment, so they work
against a deployed stack too).

Output (STYLE.md 13): people's text and tables on `out` (stdout), progress and logs on `err` (stderr).
The functions run in this process write what they would write in Lambda (Powertools' JSON lines, EMF
metrics) to handlers.cli.FUNCTION_LOG instead: never to the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from handlers.cli import FUNCTION_LOG, console, function_log, lambda_stdout
from shared import spec
from shared.dev.stack import ENDPOINTS_FILE, FUNCTIONS, LocalStack, Resources, function_env, load_template
from shared.settings import REPO_ROOT

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

SAMPLES = REPO_ROOT / "infra" / "samples"
DEMO_OWNER = "demo"
# (item, files): the committed sample media, plus a file that is not media at all
DEMO_ITEMS = (
    ("garden-clip", ("clip.mp4", "meta.json")),
    ("voice-memo", ("memo.m4a",)),
    ("test-photo", ("photo.png",)),
)
FINAL = ("COMPLETE", "PARTIAL", "QUARANTINED")
DEMO_QUERY = "don't forget to give the flowers some water each day"  # a paraphrase of the clip's sentence
REFUSED_SHOWN = 20  # refused uploads `se status` shows (--json: all)
STYLES = {
    "COMPLETE": "green",
    "SUCCEEDED": "green",
    "PARTIAL": "yellow",
    "FAILED": "red",
    "QUARANTINED": "red",
}


class StackError(RuntimeError):
    pass


def consoles(out: Console | None = None, err: Console | None = None) -> tuple[Console, Console]:
    return out or console(sys.stdout), err or console(sys.stderr)


def read_endpoints(path: Path = ENDPOINTS_FILE) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text())
    env = os.environ
    if env.get("MEDIA_BUCKET") and env.get("LEDGER_TABLE"):
        return {k: env[k] for k in ("MEDIA_BUCKET", "LEDGER_TABLE", "AWS_ENDPOINT_URL") if k in env}
    raise StackError(f"no running stack: start one with `se stack up` (it writes {path})")


def _client(endpoints: Mapping[str, Any], service: str) -> Any:
    from shared.aws.clients import client

    env = {k: v for k, v in endpoints.items() if k.startswith("AWS_") and isinstance(v, str)}
    return client(service, env or None)


def _ledger(endpoints: Mapping[str, Any]) -> Any:
    from shared.aws.ledger import Ledger

    return Ledger(_client(endpoints, "dynamodb"), endpoints["LEDGER_TABLE"])


# ---------------------------------------------------------------------- se stack up


@contextlib.contextmanager
def running(model_dir: Path, err: Console, *, verbose: int = 0, **kw: Any) -> Iterator[LocalStack]:
    """A LocalStack whose functions log to FUNCTION_LOG (at INFO with -v), with a spinner while it comes
    up (a minute or more: moto, the template's resources, the worker's models); stopped at the end."""
    overrides = {"POWERTOOLS_LOG_LEVEL": "INFO"} if verbose else {}
    stack = LocalStack(model_dir, function_log=function_log(), overrides=overrides, **kw)
    try:
        with err.status("starting the local stack: moto, the template's resources, the RunPod worker ..."):
            stack.start()
        yield stack
    finally:
        stack.stop()


def stack_up(
    model_dir: Path,
    runpod_url: str | None = None,
    *,
    out: Console | None = None,
    err: Console | None = None,
    verbose: int = 0,
) -> int:
    """The stack until Ctrl-C or SIGTERM. Once it is up, either stops it cleanly (exit 0, "stack stopped");
    while it starts, either raises KeyboardInterrupt after stopping what had started (the CLI says
    "interrupted"). The process's signal handlers are restored on the way out."""
    out, err = consoles(out, err)
    started = time.perf_counter()
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # while starting: as Ctrl-C (KeyboardInterrupt)
    try:
        return _stack_up(model_dir, runpod_url, out, err, verbose, started)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _stack_up(
    model_dir: Path, runpod_url: str | None, out: Console, err: Console, verbose: int, started: float
) -> int:
    from rich.table import Table

    log_dir = ENDPOINTS_FILE.parent
    with (
        lambda_stdout(),
        running(model_dir, err, verbose=verbose, runpod_url=runpod_url, log_dir=log_dir) as stack,
    ):
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *a: stop.set())
        signal.signal(signal.SIGTERM, lambda *a: stop.set())
        path = stack.write_endpoints()
        ep = stack.endpoints()
        out.print(f"local stack up in {time.perf_counter() - started:.0f} s", style="bold")
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="cyan")
        table.add_column()
        table.add_row(
            "AWS_ENDPOINT_URL", f"{ep['AWS_ENDPOINT_URL']}  (moto: S3, SQS, DynamoDB, Secrets Manager)"
        )
        for k in ("MEDIA_BUCKET", "LEDGER_TABLE", "UPLOAD_QUEUE_URL", "RUNPOD_ENDPOINT_URL"):
            table.add_row(k, ep[k])
        for name, url in ep["function_urls"].items():
            table.add_row(f"function URL {name}", url)
        table.add_row("endpoints", str(path))
        table.add_row("logs", f"{FUNCTION_LOG} (functions), {log_dir / 'worker.log'} (worker)")
        out.print(table)
        out.print(
            "\ntry:  se upload infra/samples/clip.mp4 --owner me --item clip1   then   se status --owner me"
        )
        out.print("Ctrl-C stops the stack.")
        while not stop.wait(0.5):
            pass
        err.print("stopping the stack ...")
    ENDPOINTS_FILE.unlink(missing_ok=True)
    out.print("stack stopped")
    return 0


# ---------------------------------------------------------------------- se upload


def upload(file: Path, owner: str, item: str, name: str | None = None) -> str:
    from shared.pipeline.keys import check_id

    check_id(owner, "owner_id")
    check_id(item, "item_id")
    ep = read_endpoints()
    key = f"uploads/{owner}/{item}/{name or file.name}"
    _client(ep, "s3").put_object(Bucket=ep["MEDIA_BUCKET"], Key=key, Body=file.read_bytes())
    return key


# ---------------------------------------------------------------------- se status


def status_rows(ledger: Any, owner: str | None = None, item: str | None = None) -> list[dict[str, Any]]:
    owners = [owner] if owner else ledger.owners()
    rows = []
    for o in owners:
        for r in ledger.owner_rows(o):
            if item is None or r["item_id"] == item:
                rows.append(r)
    return rows


def _status(value: Any) -> Any:
    from rich.text import Text

    return Text(str(value), style=STYLES.get(str(value), ""))


def render_status(rows: Iterable[Mapping[str, Any]]) -> Table:
    """items x channels: status, attempts, dims, seconds (and the error or quarantine reason)."""
    from rich.table import Table

    by_item: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        entry = by_item.setdefault((r["owner_id"], r["item_id"]), {"item": None, "channels": {}})
        if r["sk"] == "ITEM":
            entry["item"] = r
        else:
            entry["channels"][r["channel"]] = r
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("owner/item", no_wrap=True)
    table.add_column("channel", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for name in ("att", "dims", "seconds"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("note", no_wrap=True, overflow="ellipsis", max_width=72)
    for (o, i), entry in sorted(by_item.items()):
        it = entry["item"] or {}
        note = it.get("quarantine_reason") or (it.get("media_key") or it.get("meta_key") or "")
        secs = f"{it.get('gpu_seconds', 0) or 0:.2f}"
        table.add_row(
            f"{o}/{i}", "(item)", _status(it.get("status", "?")), str(it.get("attempts", 0)), "", secs, note
        )
        for name in spec.CHANNELS:
            ch = entry["channels"].get(name)
            if ch is None:
                continue
            secs = f"{ch.get('gpu_seconds') or ch.get('seconds') or 0:.2f}"
            err = (ch.get("error") or {}).get("message", "") if isinstance(ch.get("error"), dict) else ""
            dims = str(ch.get("dims") or "-")
            table.add_row(
                "", name, _status(ch.get("status", "?")), str(ch.get("attempts", 0)), dims, secs, err
            )
    return table


def version_lines(ledger: Any, owners: Iterable[str]) -> list[str]:
    """Per owner: the spec version readers use now, and the next one's progress."""
    lines = []
    for o in owners:
        st = ledger.owner_state(o) or {}
        cur = st.get("current_version") or "(none yet)"
        line = f"owner {o}: reads spec version {cur}"
        if st.get("current_version") != spec.SPEC_VERSION:
            line += f"; next {spec.SPEC_VERSION}: {st.get('settled', 0)}/{st.get('items', 0)} items settled"
        lines.append(line)
    return lines


def refused_rows(ledger: Any, owner: str | None = None, item: str | None = None) -> list[dict[str, Any]]:
    """Refused uploads not expired, newest first: the owner's, or every owner's and those of keys that
    name no valid owner (owner_id None); with `item`, those whose key names that item."""
    from shared.pipeline.ledger import Refusals
    from shared.pipeline.settings import MAX_REFUSALS_KEPT

    rows = Refusals(ledger).newest(owner, MAX_REFUSALS_KEPT)
    return rows if item is None else [r for r in rows if r["key"].split("/")[2:3] == [item]]


def render_refused(rows: list[Mapping[str, Any]], shown: int = REFUSED_SHOWN) -> Table:
    """The Refused section: when, owner, why (the reason code and our message), the key as recorded."""
    from rich.table import Table

    table = Table(
        title=f"Refused uploads ({len(rows)})",
        title_justify="left",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    table.add_column("when", no_wrap=True)
    table.add_column("owner", no_wrap=True)
    table.add_column("reason", no_wrap=True, style="red")
    table.add_column("key", overflow="fold", max_width=60)
    table.add_column("message", overflow="fold", max_width=60)
    for r in rows[:shown]:
        table.add_row(r["at"], r["owner_id"] or "(none)", r["reason"], r["key"], r["message"])
    if len(rows) > shown:
        table.caption = f"the newest {shown}; --json lists all {len(rows)}"
    return table


def status(owner: str | None, item: str | None, as_json: bool, *, out: Console | None = None) -> int:
    out, _ = consoles(out)
    ep = read_endpoints()
    ledger = _ledger(ep)
    rows = status_rows(ledger, owner, item)
    refused = refused_rows(ledger, owner, item)
    owners = sorted({r["owner_id"] for r in rows})
    if as_json:
        states = {o: ledger.owner_state(o) for o in owners}
        doc = {"rows": rows, "owners": states, "refused": refused}
        out.print_json(json.dumps(doc, default=str), highlight=False)
    else:
        out.print(render_status(rows) if rows else "no items")
        for line in version_lines(ledger, owners):
            out.print(line)
        if refused:
            out.print()
            out.print(render_refused(refused))
    return 0


# ---------------------------------------------------------------------- se search, se reindex


def sweeper_env(model_dir: Path | None = None) -> dict[str, str]:
    """The environment of the function that writes the search tables (the sweeper): on the local stack
    the one template.yaml gives it, else this process's (MEDIA_BUCKET, LEDGER_TABLE, AWS_* of a deployed
    stack); `model_dir` (--model-dir) over its MODEL_DIR."""
    ep = read_endpoints()
    env = stack_function_env("sweeper", ep) if "resources" in ep else dict(os.environ)
    if model_dir is not None:
        env["MODEL_DIR"] = str(model_dir)
    return env


def _text_model(env: Mapping[str, str], err: Console) -> Any:
    """MiniLM as the sweeper loads it (the same TEXT_PRECISION: queries and rows in one space)."""
    from shared.models.minilm_onnx import MiniLMOnnx
    from shared.settings import TextSettings

    with err.status("loading the text model ..."):
        return MiniLMOnnx.load(TextSettings.from_env(env))


def run_search(request: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """One query against the owner's current search tables, in this process: the search function's own
    SearchService (shared.search.api.service_from_env: both query encoders from MODEL_DIR, the owner's
    search pointer, links presigned at the moment), built once per environment."""
    return _search_service(tuple(sorted(env.items()))).search(request)


@functools.lru_cache(maxsize=4)
def _search_service(env: tuple[tuple[str, str], ...]) -> Any:
    from shared.search.api import service_from_env

    return service_from_env(dict(env))


def render_hits(answer: Mapping[str, Any]) -> Table:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("#", "score", "item", "moment", "channels", "text"):
        table.add_column(name, justify="right" if name in ("#", "score") else "left", no_wrap=name != "text")
    for n, h in enumerate(answer["hits"], start=1):
        span = (
            f"{h['start_s']:.1f}-{h['end_s']:.1f} s" if h["end_s"] > h["start_s"] else f"{h['start_s']:.1f} s"
        )
        table.add_row(str(n), f"{h['score']:.4f}", h["item_id"], span, ",".join(h["channels"]), h["text"])
    return table


def search(
    query: str,
    owner: str,
    *,
    k: int | None = None,
    mode: str = "hybrid",
    person: str | None = None,
    item: str | None = None,
    as_json: bool = False,
    model_dir: Path | None = None,
    out: Console | None = None,
    err: Console | None = None,
) -> int:
    """`se search`: the Searcher in this process against the stack's search tables (S3), the owner's
    current spec version. Exit 2 for a bad request (the field named) or an owner with no index."""
    from shared.errors import InvalidInput
    from shared.search.query import parse_request

    out, err = consoles(out, err)
    request = {"owner_id": owner, "text": query, "k": k, "mode": mode, "person": person, "item_id": item}
    try:
        parse_request(request)  # a bad request is refused before anything loads
        env = sweeper_env(model_dir)
        answer = run_search(request, env)
    except InvalidInput as e:
        err.print(f"error: {e.public_message}", style="red")
        return 2
    if as_json:
        out.print_json(json.dumps(answer), highlight=False)
        return 0
    hits = answer["hits"]
    out.print(
        f"{len(hits)} moment{'s' if len(hits) != 1 else ''} for {query!r} in {owner}'s media "
        f"({answer['took_ms']:.0f} ms, spec version {answer['spec_version']})"
    )
    if hits:
        out.print(render_hits(answer))
    for note in answer["skipped"]:
        out.print(f"skipped {note}", style="dim")
    return 0


def reindex(
    owner: str,
    spec_version: str | None = None,
    *,
    as_json: bool = False,
    model_dir: Path | None = None,
    out: Console | None = None,
    err: Console | None = None,
) -> int:
    """`se reindex`: the owner's search tables rebuilt from the artifacts (drop, then batches), in this
    process, with the sweeper's settings."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from shared.aws.runtime import build_pipeline
    from shared.errors import InvalidInput
    from shared.pipeline.keys import check_id

    out, err = consoles(out, err)
    try:
        check_id(owner, "owner_id")
        env = sweeper_env(model_dir)
        pipeline = build_pipeline(env, dispatch=False, text_model=_text_model(env, err), webhook=False)
        columns = (TextColumn("reindex {task.description}"), BarColumn(), MofNCompleteColumn())
        bar = Progress(*columns, console=err, transient=True)  # shown from the first batch on
        task = bar.add_task(owner, total=None)

        def progress(done: int, total: int) -> None:
            bar.start()
            bar.update(task, completed=done, total=total)

        try:
            result = pipeline.reindex_search(owner, spec_version, progress=progress)
        finally:
            bar.stop()
    except InvalidInput as e:
        err.print(f"error: {e.public_message}", style="red")
        return 2
    result["tables"] = pipeline.search.engines(result["spec_version"]).counts(owner)
    if as_json:
        out.print_json(json.dumps(result), highlight=False)
        return 0
    tables = ", ".join(f"{t} {n}" for t, n in sorted(result["tables"].items())) or "none"
    out.print(
        f"reindexed {owner}: {result['items']} items, {result['rows']} rows in spec version "
        f"{result['spec_version']} (tables: {tables})"
    )
    out.print(
        "queries read this version" if result["current"] else "queries read another version until it switches"
    )
    for item, note in sorted(result["left_out"].items()):
        out.print(f"  {item}: left out {note}", style="yellow")
    for item, reason in sorted(result["retry"].items()):
        out.print(f"  {item}: not indexed yet ({reason}); the sweeper retries it", style="yellow")
    return 0


# ---------------------------------------------------------------------- se invoke


def invoke(function: str, event_file: Path, endpoints: Path = ENDPOINTS_FILE) -> dict[str, Any]:
    """Run one template.yaml function in-process against the running stack, with the environment the
    template gives it (as `sam local invoke` does in a container). The sample events name the bucket
    `media-bucket`; that placeholder is replaced by the stack's bucket. The function's own JSON lines
    and metrics go to FUNCTION_LOG; its response is what `se invoke` prints."""
    with lambda_stdout() as log:
        return _invoke(function, event_file, endpoints, log)


def stack_function_env(function: str, ep: Mapping[str, Any]) -> dict[str, str]:
    """The environment template.yaml gives `function` on the stack `se stack up` runs (`ep`: its
    endpoints.json)."""
    if function not in FUNCTIONS:
        raise StackError(f"unknown function {function}; one of {', '.join(FUNCTIONS)}")
    res = Resources(None, load_template(), dict(ep["resources"]["physical"]))
    res.parameters = dict(ep["resources"]["parameters"])
    res.urls = dict(ep["resources"]["urls"])
    extra = {k: v for k, v in ep.items() if k.startswith("AWS_")}
    extra.update(MODEL_DIR=ep["MODEL_DIR"], **ep.get("overrides", {}))
    return function_env(res, FUNCTIONS[function], extra)


def _invoke(function: str, event_file: Path, endpoints: Path, log: TextIO) -> dict[str, Any]:
    from shared.pipeline import lambdas

    if function not in FUNCTIONS:
        raise StackError(f"unknown function {function}; one of {', '.join(FUNCTIONS)}")
    ep = read_endpoints(endpoints)
    if "resources" not in ep:
        raise StackError("`se invoke` needs a local stack started with `se stack up`")
    env = stack_function_env(function, ep)
    raw = event_file.read_text().replace("media-bucket", ep["MEDIA_BUCKET"])
    event = json.loads(raw)
    if function == "embed_text":
        from shared.lambda_text.app import handler_from_env

        handler = handler_from_env(env)
    else:
        handler = lambdas.build(function, env, log_stream=log, adopt_loggers=False)
    from shared.dev.stack import _Context

    return handler(event, _Context(function))


# ---------------------------------------------------------------------- se demo


def _progress(ledger: Any, owner: str, items: list[str]) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """Per item: its status, and (final channels, channels) so far."""
    rows = list(ledger.owner_rows(owner))
    state = {r["item_id"]: r.get("status", "?") for r in rows if r["sk"] == "ITEM"}
    counts = {i: [0, 0] for i in items}
    for r in rows:
        if r["sk"] != "ITEM" and r["item_id"] in counts:
            counts[r["item_id"]][1] += 1
            counts[r["item_id"]][0] += r.get("status") in ("SUCCEEDED", "FAILED", "QUARANTINED")
    return state, {i: (d, t) for i, (d, t) in counts.items()}


def _wait(ledger: Any, owner: str, items: list[str], timeout_s: float, err: Console) -> dict[str, str]:
    """Follow the items live (a progress bar each, on stderr) until every one is final (or the timeout)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("{task.description:20s}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("channels  {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as bar:
        tasks = {i: bar.add_task(f"{owner}/{i}", total=None, status="waiting") for i in items}
        while True:
            state, counts = _progress(ledger, owner, items)
            for i, task in tasks.items():
                done, total = counts[i]
                bar.update(task, completed=done, total=total or None, status=state.get(i, "waiting"))
            if all(state.get(i) in FINAL for i in items):
                return state
            if time.monotonic() > deadline:
                raise StackError(f"items not final after {timeout_s:.0f} s: {state}")
            time.sleep(0.4)


def demo(
    model_dir: Path, timeout_s: float = 240.0, *, out: Console | None = None, err: Console | None = None
) -> int:
    out, err = consoles(out, err)
    with lambda_stdout():
        return _demo(model_dir, timeout_s, out, err)


def _demo(model_dir: Path, timeout_s: float, out: Console, err: Console) -> int:
    from rich.table import Table

    from shared.pipeline.keys import manifest_key, transcript_key

    started = time.perf_counter()
    out.print(
        "\n== The product on the local stack: S3 upload -> SQS -> on_upload -> RunPod -> on_job_done",
        style="bold",
    )
    with running(model_dir, err) as stack:
        ep = stack.endpoints()
        out.print(
            f"stack up in {time.perf_counter() - started:.1f} s: moto {ep['AWS_ENDPOINT_URL']}, "
            f"worker {ep['RUNPOD_ENDPOINT_URL']}, functions {stack.urls.base if stack.urls else ''}"
        )
        s3 = stack.client("s3")
        bucket = ep["MEDIA_BUCKET"]
        items = [i for i, _ in DEMO_ITEMS] + ["not-media"]
        for item, files in DEMO_ITEMS:
            for f in files:
                s3.put_object(
                    Bucket=bucket, Key=f"uploads/{DEMO_OWNER}/{item}/{f}", Body=(SAMPLES / f).read_bytes()
                )
                out.print(f"uploaded s3://{bucket}/uploads/{DEMO_OWNER}/{item}/{f}")
        s3.put_object(
            Bucket=bucket, Key=f"uploads/{DEMO_OWNER}/not-media/broken.mp4", Body=b"this is not a video"
        )
        s3.put_object(Bucket=bucket, Key="uploads/demo/../escape/x.mp4", Body=b"x")  # refused: traversal
        out.print("uploaded a file that is not media (not-media/broken.mp4) and a key with '..' (refused)")
        ledger = _ledger(ep)
        state = _wait(ledger, DEMO_OWNER, items, timeout_s, err)
        rows = status_rows(ledger, DEMO_OWNER)
        out.print()
        out.print(render_status(rows))
        refused = refused_rows(ledger, DEMO_OWNER)  # the '..' key, refused with its reason
        if refused:
            out.print()
            out.print(render_refused(refused))
        doc = json.loads(
            s3.get_object(Bucket=bucket, Key=transcript_key(spec.SPEC_VERSION, DEMO_OWNER, "garden-clip"))[
                "Body"
            ].read()
        )
        out.print(
            f"\ntranscript of garden-clip: {doc['text'].strip()!r} ({len(doc['segments'])} segments, "
            f"{doc['duration']:.1f} s)"
        )
        mkey = manifest_key(spec.SPEC_VERSION, DEMO_OWNER)
        with err.status("waiting for the sweeper to write the manifest ..."):
            mrows = _wait_manifest(s3, bucket, mkey, sum(1 for r in rows if r["sk"] != "ITEM"), timeout_s)
        table = Table(
            title=f"manifest s3://{bucket}/{mkey} ({len(mrows)} rows)",
            title_justify="left",
            box=None,
            header_style="bold",
            pad_edge=False,
        )
        for name in ("item", "channel", "status", "dim", "model", "embedding_key"):
            table.add_column(name, justify="right" if name == "dim" else "left", no_wrap=True)
        for m in mrows:
            table.add_row(
                m["item_id"],
                m["channel"],
                _status(m["status"]),
                str(m["embedding_dim"] or "-"),
                (m["model_name"] or "")[:28],
                m["embedding_key"],
            )
        out.print()
        out.print(table)
        checked, meta = _check_vectors(s3, bucket, mrows)
        out.print(
            f"\nevery vector in the manifest read back from S3 and checked (float32, dims, finite, "
            f"unit norm): {checked}; text_meta from meta.json: {meta}"
        )
        expected = {
            "garden-clip": "COMPLETE",
            "voice-memo": "COMPLETE",
            "test-photo": "COMPLETE",
            "not-media": "PARTIAL",
        }
        if state != expected:
            raise StackError(f"unexpected final statuses {state}, expected {expected}")
        _demo_search(stack, ledger, items, timeout_s, out, err)
    out.print(
        f"\ndemo done in {time.perf_counter() - started:.1f} s (CLIP, VideoMAE, wav2vec2: tiny random "
        "dev models: their vectors mean nothing; MiniLM and Whisper tiny.en are the real weights)"
    )
    return 0


def _demo_search(
    stack: LocalStack, ledger: Any, items: list[str], timeout_s: float, out: Console, err: Console
) -> None:
    """The demo's last step: a paraphrase of the sentence spoken in the clip finds the clip, and when."""
    from shared.search.query import NotFound

    env = stack.envs["sweeper"]
    request = {"owner_id": DEMO_OWNER, "text": DEMO_QUERY, "k": 3}
    deadline = time.monotonic() + timeout_s
    with err.status("waiting for the sweeper to write the search tables ..."):
        while True:
            indexed = all(
                str((ledger.item(DEMO_OWNER, i) or {}).get("search_indexed") or "").startswith(
                    spec.SPEC_VERSION
                )
                for i in items
            )
            try:
                if indexed:
                    answer = run_search(request, env)
                    break
            except NotFound:  # the search pointer comes with the same rebuild, just after
                pass
            if time.monotonic() > deadline:
                raise StackError("the items were not indexed for search in time")
            time.sleep(0.3)
    out.print(
        f"\nsearch {DEMO_QUERY!r} (the clip says: please remember to water the plants every morning), "
        f"{answer['took_ms']:.0f} ms:"
    )
    out.print(render_hits(answer))
    for note in answer["skipped"]:
        out.print(f"skipped {note}", style="dim")
    top = answer["hits"][0] if answer["hits"] else None
    if top is None or top["item_id"] != "garden-clip":
        raise StackError(f"the paraphrase did not find garden-clip first: {answer['hits']}")
    out.print(f"-> garden-clip, {top['start_s']:.1f} s to {top['end_s']:.1f} s: {top['text']!r}")


def _wait_manifest(s3: Any, bucket: str, key: str, want_rows: int, timeout_s: float) -> list[dict[str, Any]]:
    """The sweeper rebuilds an owner's manifest shortly after its items complete: wait for all rows."""
    from shared.pipeline import manifests

    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            rows = manifests.read_parquet(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            rows = []
        if len(rows) == want_rows:
            return rows
        time.sleep(0.3)
    raise StackError(f"the manifest has {len(rows)} rows, expected {want_rows}")


def _check_vectors(s3: Any, bucket: str, mrows: list[dict[str, Any]]) -> tuple[int, int]:
    """Every vector of the manifest read back and checked; (vectors checked, text_meta rows)."""
    from shared.vectors import check_vector, load_npy

    checked = 0
    for m in mrows:
        if m["status"] != "SUCCEEDED" or not m["embedding_key"].endswith(".npy"):
            continue
        arr = load_npy(s3.get_object(Bucket=bucket, Key=m["embedding_key"])["Body"].read(), m["channel"])
        check_vector(arr, m["embedding_dim"], m["channel"], rows=arr.ndim == 2)
        checked += 1
    if checked == 0:
        raise StackError("no vectors were written")
    return checked, sum(1 for m in mrows if m["channel"] == "text_meta")


def main_error(e: Exception, err: Console | None = None) -> int:
    _, err = consoles(None, err)
    err.print(f"error: {e}", style="red")
    return 1
