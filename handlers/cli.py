"""`se`: the command line, for people (STYLE.md 13) and for scripts (`--json`).

Results (text, rich tables) on stdout; progress and logs on stderr, warnings and errors only unless -v
(-vv: debug). Commands that run Lambda code in this process (embed-text, demo, stack up, invoke) send
what it writes in Lambda (Powertools' JSON lines, EMF metrics) to FUNCTION_LOG, never to the terminal.
Nothing here writes os.environ: a function's settings are handed to it as a mapping.

MODEL_DIR (default: <repo>/.models) applies to every command; `--model-dir` overrides it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from shared import logs
from shared.settings import REPO_ROOT, model_dir_from

if TYPE_CHECKING:
    from rich.console import Console

FUNCTION_LOG = REPO_ROOT / ".cache" / "stack" / "functions.log"
DEMO_TEXTS = (
    ("q-cat", "a cat sleeping on a sofa"),
    ("p-kitten", "A small kitten curled up and dozed off on the living-room couch all afternoon."),
    ("q-stock", "quarterly earnings report for the stock market"),
    (
        "p-finance",
        "The company's revenue grew 12% this quarter, beating analyst expectations on Wall Street.",
    ),
    ("c-sort", "def sort_numbers(xs: list[int]) -> list[int]:\n    return sorted(xs)"),
    ("q-sort", "how do I sort a list of integers in python"),
    ("empty", "   "),
)


# ---------------------------------------------------------------------- output


def console(file: TextIO) -> Console:
    """A rich console for people on `file`: our text is never read as markup, emoji codes or something to
    highlight; a file or a pipe gets 160 columns (rich's 80 would fold the tables) unless COLUMNS is set."""
    from rich.console import Console

    wide = None if file.isatty() or os.environ.get("COLUMNS") else 160
    return Console(file=file, markup=False, emoji=False, highlight=False, soft_wrap=True, width=wide)


def print_json(out: Console, obj: Any) -> None:
    """What a script parses: plain JSON, one document, whatever the terminal."""
    out.file.write(json.dumps(obj, indent=2, default=str) + "\n")
    out.file.flush()


@functools.cache
def function_log() -> TextIO:
    """FUNCTION_LOG, open (appending, line-buffered) for the life of the process: Powertools keeps one
    logger per service name in a process, bound to the stream of the first."""
    FUNCTION_LOG.parent.mkdir(parents=True, exist_ok=True)
    return open(FUNCTION_LOG, "a", buffering=1, encoding="utf-8")


@contextlib.contextmanager
def lambda_stdout() -> Iterator[TextIO]:
    """While Lambda code runs in this process, what it prints to stdout (EMF metrics, which CloudWatch
    reads there; Powertools' JSON lines) goes to FUNCTION_LOG. People's output goes to consoles bound
    to the real stdout/stderr before this, and is unaffected."""
    with contextlib.redirect_stdout(function_log()) as log:
        yield log


def _model_dir(args: argparse.Namespace) -> Path:
    return Path(args.model_dir) if args.model_dir else model_dir_from(os.environ)


# ---------------------------------------------------------------------- commands


def cmd_setup_models(args: argparse.Namespace) -> int:
    from rich.progress import Progress
    from rich.table import Table

    from shared.dev.models import DEFAULT_DEV_MODELS, setup_dev_models

    names = args.only.split(",") if args.only else list(DEFAULT_DEV_MODELS)
    made: dict[str, Path] = {}
    with Progress(console=args.err, transient=True) as bar:
        task = bar.add_task("dev models", total=len(names))
        for name in names:
            bar.update(task, description=name)
            made.update(setup_dev_models(_model_dir(args), [name]))
            bar.advance(task)
    if args.json:
        print_json(args.out, {k: str(v) for k, v in made.items()})
        return 0
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("model")
    table.add_column("folder")
    for name, path in made.items():
        table.add_row(name, str(path))
    args.out.print(table)
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from shared.models.bake import main as bake_main

    argv = ["--models", args.models, "--model-dir", str(_model_dir(args))]
    if args.token_file:
        argv += ["--token-file", args.token_file]
    return bake_main(argv) or 0


def cmd_export_minilm(args: argparse.Namespace) -> int:
    from shared.models.minilm_export import main as export_main

    return export_main(["--checkpoint", args.checkpoint, "--out", args.out_dir]) or 0


def cmd_spec(args: argparse.Namespace) -> int:
    from rich.table import Table

    from shared import spec

    rows = {
        name: {"runs_on": ch.runs_on, "model": ch.model, "dims": ch.dims, "fingerprint": ch.fingerprint}
        for name, ch in spec.CHANNELS.items()
    }
    if args.json:
        print_json(args.out, {"spec_version": spec.SPEC_VERSION, "channels": rows})
        return 0
    table = Table(title=f"spec version {spec.SPEC_VERSION}", title_justify="left", box=None, pad_edge=False)
    for col in ("channel", "runs on", "model", "dims", "fingerprint"):
        table.add_column(col, justify="right" if col == "dims" else "left", header_style="bold")
    for name, r in rows.items():
        table.add_row(name, r["runs_on"], r["model"] or "-", str(r["dims"] or "-"), r["fingerprint"])
    args.out.print(table)
    return 0


class _Context:
    """The attributes of a Lambda context object that Powertools reads."""

    function_name = "se-local-embed-text"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:se-local-embed-text"
    aws_request_id = "local"


def _text_handler(model_dir: Path) -> Any:
    """The embed-text function as Lambda builds it at init (handlers.aws_lambda.embed_text), given its
    settings as a mapping; call it (and build it) inside `lambda_stdout`."""
    from shared.lambda_text.app import handler_from_env

    return handler_from_env({**os.environ, "MODEL_DIR": str(model_dir)})


def cmd_embed_text(args: argparse.Namespace) -> int:
    from rich.table import Table

    payload = {
        "batch_id": "cli",
        "chunks": [{"chunk_id": str(i), "content": t} for i, t in enumerate(args.texts)],
    }
    with args.err.status("loading the text model ..."), lambda_stdout():
        out = _text_handler(_model_dir(args))(payload, _Context())
    if args.json:
        print_json(args.out, out)
        return 2 if "error" in out else 0
    if "error" in out:
        e = out["error"]
        args.err.print(f"error: {e['code']}: {e['message']}", style="red")
        return 2
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", justify="right")
    table.add_column("text", max_width=40, no_wrap=True, overflow="ellipsis")
    table.add_column(f"vector (first 6 of {out['dims']})")
    for v, text in zip(out["vectors"], args.texts, strict=True):
        table.add_row(v["chunk_id"], text, " ".join(f"{x:+.4f}" for x in v["vector"][:6]) + " ...")
    args.out.print(table)
    args.out.print(f"model {out['model']}", style="dim")
    return 0


def _demo_text(args: argparse.Namespace) -> int:
    import numpy as np
    from rich.table import Table

    out = args.out
    out.print(
        "== Lambda text path: all-MiniLM-L6-v2 on ONNX Runtime, through handlers.aws_lambda.embed_text",
        style="bold",
    )
    payload = {"batch_id": "demo", "chunks": [{"chunk_id": cid, "content": text} for cid, text in DEMO_TEXTS]}
    event = {  # a function-URL (HTTP API v2) proxy event, as AWS delivers it
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "body": json.dumps(payload),
        "isBase64Encoded": False,
    }
    bad_payload = {"batch_id": "demo-bad", "chunks": [{"chunk_id": "a", "content": "x"}, {"chunk_id": "a"}]}
    with args.err.status("loading the text model ..."), lambda_stdout():
        handler = _text_handler(_model_dir(args))
        resp = handler(event, _Context())
        bad = handler(bad_payload, _Context())
    if resp["statusCode"] != 200:
        args.err.print(f"status {resp['statusCode']}: {resp['body']}", style="red")
        return 1
    body = json.loads(resp["body"])
    ids = [v["chunk_id"] for v in body["vectors"]]
    mat = np.asarray([v["vector"] for v in body["vectors"]], dtype=np.float32)
    norms = sorted({round(float(n), 4) for n in np.linalg.norm(mat, axis=1)})
    out.print(f"status 200  model {body['model']}  dims {body['dims']}  norms {norms}")
    sims = mat @ mat.T
    table = Table(title="cosine similarity", title_justify="left", box=None, pad_edge=False)
    table.add_column("")
    for i in ids:
        table.add_column(i, justify="right")
    for i, row in zip(ids, sims, strict=True):
        table.add_row(i, *(f"{x:.3f}" for x in row))
    out.print()
    out.print(table)
    table = Table(title="nearest neighbour of each text", title_justify="left", box=None, pad_edge=False)
    for col in ("text", "nearest", "cosine"):
        table.add_column(col, justify="right" if col == "cosine" else "left")
    for k, i in enumerate(ids):
        j = next(j for j in np.argsort(-sims[k]) if j != k)
        table.add_row(i, ids[j], f"{sims[k, j]:.3f}")
    out.print()
    out.print(table)
    out.print(f"\nbad payload -> {json.dumps(bad)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    rc = _demo_text(args)
    if rc or args.text_only:
        return rc
    from shared.dev import stack_cli

    try:
        return stack_cli.demo(_model_dir(args), out=args.out, err=args.err)
    except RuntimeError as e:  # StackError, WorkerFailed
        args.err.print(f"\ndemo FAILED: {e}", style="red")
        return 1


def cmd_stack(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    return stack_cli.stack_up(
        _model_dir(args), runpod_url=args.runpod_url, out=args.out, err=args.err, verbose=args.verbose
    )


def cmd_upload(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli
    from shared.errors import EmbeddingError

    try:
        key = stack_cli.upload(Path(args.file), args.owner, args.item, args.name)
    except (stack_cli.StackError, EmbeddingError, OSError) as e:
        return stack_cli.main_error(e, args.err)
    if args.json:
        print_json(args.out, {"key": key})
    else:
        args.out.print(f"uploaded {key}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    try:
        return stack_cli.status(args.owner, args.item, args.json, out=args.out)
    except stack_cli.StackError as e:
        return stack_cli.main_error(e, args.err)


def cmd_search(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    try:
        return stack_cli.search(
            args.query,
            args.owner,
            k=args.k,
            mode=args.mode,
            person=args.person,
            item=args.item,
            as_json=args.json,
            model_dir=Path(args.model_dir) if args.model_dir else None,
            out=args.out,
            err=args.err,
        )
    except stack_cli.StackError as e:
        return stack_cli.main_error(e, args.err)


def cmd_reindex(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    try:
        return stack_cli.reindex(
            args.owner,
            args.spec_version,
            as_json=args.json,
            model_dir=Path(args.model_dir) if args.model_dir else None,
            out=args.out,
            err=args.err,
        )
    except stack_cli.StackError as e:
        return stack_cli.main_error(e, args.err)


def cmd_invoke(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    try:
        out = stack_cli.invoke(args.function, Path(args.event))
    except (stack_cli.StackError, OSError, ValueError) as e:
        return stack_cli.main_error(e, args.err)
    print_json(args.out, out)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    import signal
    import threading

    from shared.admin import server as admin

    endpoints = None
    if args.url is None:  # the local stack's reprocess function URL
        from shared.dev.stack import ENDPOINTS_FILE

        endpoints = ENDPOINTS_FILE
    try:
        srv = admin.console(
            args.url, port=args.port, region=args.region, profile=args.profile, endpoints=endpoints
        )
    except (ValueError, OSError) as e:
        args.err.print(f"error: {e}", style="red")
        return 1
    args.out.print(
        f"admin console: {srv.url}  (API {srv.function_url}, region {srv.region}; Ctrl-C stops it)"
    )
    stop = threading.Event()  # Ctrl-C or SIGTERM (also when started in the background)
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    with srv:
        while not stop.wait(0.5):
            pass
    args.out.print("admin console stopped")
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    from shared.aws.admin_api import AdminApi, ApiError, reprocess

    body: dict = {"scope": args.scope, "force": args.force, "dry_run": args.dry_run}
    for k in ("owner", "item", "since"):
        if getattr(args, k) is not None:
            body[{"owner": "owner_id", "item": "item_id"}.get(k, k)] = getattr(args, k)
    try:
        api = AdminApi.resolve(args.url)
        return reprocess(api, body, wait=not args.no_wait, out=args.out, err=args.err, as_json=args.json)
    except ApiError as e:
        args.err.print(f"error: {e}", style="red")
        return 2


def cmd_runs(args: argparse.Namespace) -> int:
    from shared.aws.admin_api import AdminApi, ApiError, render_runs

    try:
        api = AdminApi.resolve(args.url)
        out = (
            api.call("GET", f"/runs/{args.run}") if args.run else api.call("GET", f"/runs?limit={args.limit}")
        )
    except ApiError as e:
        args.err.print(f"error: {e}", style="red")
        return 2
    if args.json or args.run:
        print_json(args.out, out)
    else:
        args.out.print(render_runs(out["runs"]))
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """One sample upload through a deployed stack, each step reported as it ends (shared.smoke)."""
    from botocore.exceptions import BotoCoreError
    from rich.text import Text

    from shared.errors import InvalidInput
    from shared.smoke import SAMPLES, STEPS, Clients, Smoke, Step

    marks = {True: ("ok", "green"), False: ("FAILED", "red"), None: ("skipped", "yellow")}
    width = max(map(len, STEPS))

    def show(step: Step) -> None:
        if not args.json:
            word, style = marks[step.ok]
            line = Text(f"{step.name:<{width}}  ")
            line.append(f"{word:<7}", style=style).append(f"  {step.detail}  ").append(
                f"{step.seconds:.1f} s", "dim"
            )
            args.out.print(line)

    samples = sorted(p.name for p in SAMPLES.iterdir() if p.is_file())
    try:
        if args.sample not in samples:
            raise InvalidInput(f"must be one of {', '.join(samples)} (infra/samples/)", field="--sample")
        for flag in ("timeout", "poll"):
            if not getattr(args, flag) > 0:
                raise InvalidInput("must be a number of seconds above 0", field=f"--{flag}")
        smoke = Smoke(
            args.stack,
            Clients.from_session(args.region, args.profile),
            owner_id=args.owner,
            sample=SAMPLES / args.sample,
            timeout_s=args.timeout,
            poll_s=args.poll,
            on_step=show,
        )
    except InvalidInput as e:
        args.err.print(f"error: {e.public_message}", style="red")
        return 2
    except (ValueError, BotoCoreError) as e:  # no region; an unknown profile
        args.err.print(f"error: {e}", style="red")
        return 2
    if not args.json:
        args.out.print(
            f"smoke test of stack {args.stack} ({smoke.c.region}): item {smoke.owner_id}/{smoke.item_id}"
        )
    with args.err.status(f"following {smoke.owner_id}/{smoke.item_id} (at most {args.timeout:g} s) ..."):
        report = smoke.run()
    if args.json:
        print_json(args.out, report.as_dict())
    elif report.ok:
        args.out.print(
            f"smoke test passed in {sum(s.seconds for s in report.steps):.1f} s", style="bold green"
        )
    else:
        args.out.print(f"smoke test FAILED at step '{report.failed_step}'", style="bold red")
    return 0 if report.ok else 1


# ---------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    # -v and --model-dir are accepted before or after the command (`se -v demo`, `se demo -v`)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="logs: -v info, -vv debug"
    )
    common.add_argument("--model-dir", default=argparse.SUPPRESS, help="overrides MODEL_DIR")
    p = argparse.ArgumentParser(
        prog="se",
        description="Media in S3 -> search-ready embeddings: the local stack, the models, the admin API.",
        epilog="Results on stdout (`--json` where a script reads them); logs on stderr, quiet unless -v. "
        "MODEL_DIR (default <repo>/.models) applies to every command.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="logs: -v info, -vv debug")
    p.add_argument("--model-dir", help="overrides MODEL_DIR")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str, help: str, func: Any, **kw: Any) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=kw.pop("description", help), parents=[common], **kw)
        s.set_defaults(func=func)
        return s

    def json_flag(s: argparse.ArgumentParser) -> None:
        s.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")

    s = command(
        "demo",
        "the main job: sample media through the local stack",
        cmd_demo,
        description="The Lambda text path (MiniLM on ONNX Runtime), then sample media through the whole "
        "pipeline on the local stack (README).",
    )
    s.add_argument("--text-only", action="store_true", help="only the Lambda text path (no worker)")

    s = command(
        "stack",
        "run the product on 127.0.0.1 until Ctrl-C",
        cmd_stack,
        description="moto (S3, SQS, DynamoDB, Secrets Manager), the RunPod worker under the SDK's local API "
        "and the functions in this process, until Ctrl-C.",
    )
    s.add_argument("action", choices=["up"])
    s.add_argument("--runpod-url", help="a RunPod-API URL to use instead of starting the local worker")

    s = command("upload", "put a file at uploads/OWNER/ITEM/ on the stack", cmd_upload)
    s.add_argument("file")
    s.add_argument("--owner", required=True)
    s.add_argument("--item", required=True)
    s.add_argument("--name", help="file name in S3 (default: the local file's name)")
    json_flag(s)

    s = command("status", "items x channels from the ledger", cmd_status)
    s.add_argument("--owner")
    s.add_argument("--item")
    json_flag(s)

    s = command(
        "search",
        "find the moment in an owner's media",
        cmd_search,
        description="Runs the search in this process against the stack's search tables (the owner's "
        "current spec version): ranked moments with their item, time span, channels and snippet.",
    )
    s.add_argument("query", help="what to look for (empty with --person: where the person appears)")
    s.add_argument("--owner", required=True)
    s.add_argument("--k", type=int, default=None, help="moments to return (default 10, at most 50)")
    s.add_argument("--mode", choices=["hybrid", "text", "vector"], default="hybrid")
    s.add_argument("--person", help="a person_id: frames that look like the person's reference photos")
    s.add_argument("--item", help="only this item_id")
    json_flag(s)

    s = command(
        "reindex",
        "rebuild an owner's search tables",
        cmd_reindex,
        description="Drops the owner's search tables of the deployed spec version and writes them again "
        "from the ledger's artifacts, in batches (SEARCH_BATCH_ITEMS items per write).",
    )
    s.add_argument("--owner", required=True)
    s.add_argument("--spec-version", help="the deployed spec version (the only one the ledger names)")
    json_flag(s)

    s = command("invoke", "run one template.yaml function against the stack", cmd_invoke)
    s.add_argument("function", choices=["on_upload", "on_job_done", "sweeper", "embed_text", "reprocess"])
    s.add_argument("--event", required=True, help="a sample event (infra/events/...)")

    s = command("embed-text", "embed texts through the Lambda text handler", cmd_embed_text)
    s.add_argument("texts", nargs="+", metavar="TEXT")
    json_flag(s)

    s = command(
        "reprocess",
        "bring items up to the deployed spec (admin API)",
        cmd_reprocess,
        description="Dry run first (--dry-run: counts, reasons, GPU seconds and cost; changes nothing), "
        "then a real run, followed with a progress bar until it finishes.",
    )
    s.add_argument("--scope", required=True, choices=["item", "owner", "all"])
    s.add_argument("--owner", help="owner_id (scope owner and item)")
    s.add_argument("--item", help="item_id (scope item)")
    s.add_argument("--since", help="only items updated after this ISO-8601 time")
    s.add_argument("--force", action="store_true", help="re-run every channel, current or not")
    s.add_argument("--dry-run", action="store_true", help="report what would run; change nothing")
    s.add_argument("--no-wait", action="store_true", help="start the run and return")
    s.add_argument("--url", help="the admin API (default: REPROCESS_FUNCTION_URL or the local stack)")
    json_flag(s)

    s = command("runs", "reprocess runs with their counts, newest first", cmd_runs)
    s.add_argument("run", nargs="?", help="one run's id: its whole row (JSON)")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--url", help="the admin API (default: REPROCESS_FUNCTION_URL or the local stack)")
    json_flag(s)

    s = command("admin", "the operator's admin console on 127.0.0.1", cmd_admin)
    s.add_argument(
        "--url", help="the reprocess function URL of a deployed stack (default: the local stack's)"
    )
    s.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (default 8787; 0 picks one)")
    s.add_argument("--region", help="signing region (default: the AWS session's / AWS_DEFAULT_REGION)")
    s.add_argument("--profile", help="AWS profile to sign with (default: botocore's credential chain)")

    s = command(
        "smoke",
        "check a deployed stack with one sample upload",
        cmd_smoke,
        description="Uploads a bundled sample (infra/samples/) under a fresh item id to the stack's bucket "
        "and follows it through the ledger: uploaded, item seen, dispatched, complete, artifacts present, "
        "and search when the stack has a search URL. Exits 1 at the first step that fails (docs/deploy.md).",
    )
    s.add_argument(
        "--stack", required=True, help="the CloudFormation stack name (samconfig.toml's stack_name)"
    )
    s.add_argument("--region", help="default: the AWS session's (AWS_REGION / AWS_DEFAULT_REGION / profile)")
    s.add_argument("--profile", help="AWS profile (default: botocore's credential chain)")
    s.add_argument("--owner", default="smoke", help="owner_id to upload under (default: smoke)")
    s.add_argument("--sample", default="photo.png", help="a file of infra/samples/ (default: photo.png)")
    s.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run (default 600)")
    s.add_argument("--poll", type=float, default=2.0, help="seconds between ledger reads (default 2)")
    json_flag(s)

    s = command("spec", "channels, models, dims, fingerprints, spec version", cmd_spec)
    json_flag(s)

    s = command("setup-models", "fill MODEL_DIR with the dev models", cmd_setup_models)
    s.add_argument("--only", help="comma-separated registry names")
    json_flag(s)

    s = command("bake", "download the registry's pinned model files", cmd_bake)
    s.add_argument("--models", required=True, help="comma-separated registry names")
    s.add_argument("--token-file", help="file holding the HF token (a BuildKit secret)")

    s = command("export-minilm", "a sentence-transformers checkpoint -> ONNX folder", cmd_export_minilm)
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", dest="out_dir", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # bound now: while Lambda code runs, sys.stdout is its log file (lambda_stdout)
    args.out, args.err = console(sys.stdout), console(sys.stderr)
    handler = logs.cli(args.verbose, args.err)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        args.err.print("interrupted")
        return 130
    finally:
        logs.remove(handler)


if __name__ == "__main__":
    sys.exit(main())
