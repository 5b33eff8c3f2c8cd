"""A stand-in for the `reprocess` function URL, for the proxy's unit tests: it checks SigV4 the way the
local function-URL server does (`shared.aws.sigv4.verify`), records exactly what reached it, and
answers the admin API's routes from a small in-memory ledger (runs advance one item per GET)."""

from __future__ import annotations

import copy
import json
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.aws import sigv4

REGION = "us-east-1"
SECRETS = {"AKIDTESTADMIN": "fake-secret-for-tests"}  # not a credential: this server's own test key
SPEC = "2099-01-01"


def item(item_id: str, status: str = "COMPLETE", error: dict[str, str] | None = None) -> dict[str, Any]:
    ch_status = {"COMPLETE": "SUCCEEDED", "QUARANTINED": "QUARANTINED"}.get(status, "FAILED")
    ch: dict[str, Any] = {"status": ch_status, "attempts": 1, "dims": 512, "spec_version": SPEC}
    if error:
        ch["error"] = error
    out = {
        "item_id": item_id,
        "kind": "upload",
        "status": status,
        "attempts": 1,
        "updated_at": "2099-01-01T00:00:00Z",
        "channels": {"image_clip": ch},
    }
    if status == "QUARANTINED":
        out["quarantine_reason"] = (error or {}).get("message", "quarantined")
    return out


class FakeApi:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.items: dict[str, list[dict[str, Any]]] = {"o1": [item("a"), item("b")]}
        self.runs: list[dict[str, Any]] = []
        self.refusals: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = f"http://{self.headers.get('Host')}{self.path}"
                rec = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                try:
                    rec["akid"] = sigv4.verify(self.command, url, dict(self.headers), body, SECRETS, REGION)
                except sigv4.SignatureError as e:
                    rec["refused"] = str(e)
                    api.requests.append(rec)
                    return self._send(403, {"Message": "Forbidden"})
                api.requests.append(rec)
                status, out = api.route(self.command, self.path, body)
                self._send(status, out)

            def _send(self, status: int, doc: Any) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Set-Cookie", "upstream=1")  # must never reach the browser
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/reprocess"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FakeApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ the API

    def route(self, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
        """One request, answered with a copy taken under the lock: the handler threads serialise their
        answers while others advance the same run rows."""
        with self.lock:
            status, out = self._route(method, raw_path, body)
            return status, copy.deepcopy(out)

    def _route(self, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
        parts = urllib.parse.urlsplit(raw_path)
        path = parts.path.removeprefix("/reprocess")
        query = dict(urllib.parse.parse_qsl(parts.query))
        with self.lock:
            if (method, path) == ("GET", "/owners"):
                return 200, {
                    "owners": [
                        {"owner_id": o, "current_version": SPEC, "items": len(v), "settled": len(v)}
                        for o, v in self.items.items()
                    ]
                }
            if method == "GET" and path in ("/items", "/quarantined"):
                rows = self.items.get(query.get("owner_id", ""), [])
                if path == "/quarantined":
                    rows = [r for r in rows if r["status"] == "QUARANTINED"]
                return 200, {"owner_id": query.get("owner_id"), "items": rows}
            if (method, path) == ("GET", "/refusals"):
                return 200, {"refusals": self.refusals}
            if (method, path) == ("GET", "/runs"):
                for r in self.runs:
                    self._advance(r)
                return 200, {"runs": list(reversed(self.runs))}
            if method == "GET" and path.startswith("/runs/"):
                for r in self.runs:
                    if r["run_id"] == path.split("/")[2]:
                        self._advance(r)
                        return 200, r
                return 404, {"error": {"code": "not_found", "message": "no such run"}}
            if (method, path) in (("POST", "/reprocess"), ("POST", "/replay")):
                req = json.loads(body)
                if path == "/replay":
                    req = {"scope": "item", **req}
                return self._reprocess(req)
        return 404, {"error": {"code": "not_found", "message": "no such route"}}

    def _advance(self, run: dict[str, Any]) -> None:
        if run["status"] != "finished":
            run["status"] = "running"
            run["done"] += 1
            if run["done"] >= run["planned"]:
                run["status"] = "finished"
                run["finished_at"] = "2099-01-01T00:01:00Z"
                if run["scope"] == "item":
                    for rows in self.items.values():
                        for i, r in enumerate(rows):
                            if r["item_id"] == run.get("item_id"):
                                rows[i] = item(r["item_id"])

    def _reprocess(self, req: dict[str, Any]) -> tuple[int, Any]:
        scope = req.get("scope")
        if scope not in ("item", "owner", "all"):
            return 400, {"error": {"code": "invalid_input", "field": "scope", "message": "unknown scope"}}
        if scope in ("item", "owner") and not req.get("owner_id"):
            return 400, {
                "error": {"code": "invalid_input", "field": "owner_id", "message": "owner_id needed"}
            }
        rows = [
            r
            for o, v in self.items.items()
            for r in v
            if scope == "all" or o == req.get("owner_id")
            if scope != "item" or r["item_id"] == req.get("item_id")
        ]
        if not rows:
            return 404, {"error": {"code": "not_found", "field": "owner_id", "message": "no items"}}
        if req.get("dry_run"):
            return 200, {
                "status": "dry_run",
                "spec_version": SPEC,
                "scope": scope,
                "item_count": len(rows),
                "channel_count": len(rows),
                "channels": {"image_clip": len(rows)},
                "reasons": {"forced" if req.get("force") else "new_spec": len(rows)},
                "skipped": {"in_flight": 0, "current": 0},
                "gpu_seconds": 1.5 * len(rows),
                "cost_usd": 0.0004 * len(rows),
                "message": f"would reprocess {len(rows)} item(s)",
            }
        run = {
            "run_id": uuid.uuid4().hex[:12],
            "spec_version": SPEC,
            "scope": scope,
            "owner_id": req.get("owner_id"),
            "item_id": req.get("item_id"),
            "force": bool(req.get("force")),
            "dry_run": False,
            "status": "planning",
            "items": len(rows),
            "planned": len(rows),
            "done": 0,
            "failed": 0,
            "skipped": 0,
            "started_at": "2099-01-01T00:00:00Z",
        }
        self.runs.append(run)
        return 202, {
            "status": "queued",
            "spec_version": SPEC,
            "scope": scope,
            "item_count": len(rows),
            "run_id": run["run_id"],
            "message": f"queued {len(rows)} item(s)",
        }
