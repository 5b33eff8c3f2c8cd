"""The admin console (`se admin`) in a real headless browser (Debian's chromium + chromium-driver under
selenium), against the local stack: the page's numbers are checked against the ledger, the dry run and
its confirmation start a run whose progress the page follows to the end, and a quarantined item is
replayed from its button. A screenshot is saved (its path is printed)."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from botocore.credentials import Credentials

from shared.admin.server import AdminServer
from shared.aws import sigv4
from shared.settings import REPO_ROOT

pytestmark = pytest.mark.e2e

T = TypeVar("T")
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'

# ---------------------------------------------------------------------- browser helpers


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).is_file()), None) or shutil.which(name)


@contextmanager
def chromium(tmp: Path) -> Iterator[Any]:
    """Headless Chromium under selenium, with the system's driver (selenium-manager downloads nothing)."""
    binary, driver = _first(CHROMIUM, "chromium"), _first(DRIVER, "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        binary = None
    if not binary or not driver:
        why = "selenium, chromium or chromium-driver is missing (scripts/bootstrap.sh installs them)"
        if os.environ.get("CI"):  # CI runs bootstrap first: a missing browser there is a failure
            pytest.fail(why)
        pytest.skip(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1400,1500",
        f"--user-data-dir={tmp / 'chromium-profile'}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver, log_output=str(tmp / "chromedriver.log"))
    drv = webdriver.Chrome(options=opts, service=service)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def wait_for(what: str, fn: Callable[[], T | None], timeout_s: float = 20.0, every_s: float = 0.2) -> T:
    """fn() until it returns something truthy (an exception counts as not yet: a row not rendered yet, an
    element replaced by a refresh); AssertionError naming `what` at the timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(every_s)


def css(drv: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return drv.find_element(By.CSS_SELECTOR, selector)


def css_all(drv: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, selector)


def page_errors(drv: Any) -> list[str]:
    """The page's own JavaScript errors and CSP violations (an API answer the page shows is not one)."""
    return [
        e["message"]
        for e in drv.get_log("browser")
        if e.get("level") == "SEVERE" and "/api/" not in e.get("message", "")
    ]


def items_on_page(drv: Any) -> dict[str, dict[str, Any]]:
    """The items table as the operator sees it: item -> status, attempts, channels (status, attempts)."""
    out: dict[str, dict[str, Any]] = {}
    for row in css_all(drv, "#items-body tr"):
        chans = {}
        for li in row.find_elements("css selector", "li[data-channel]"):
            chans[li.get_attribute("data-channel")] = (
                li.find_element("css selector", ".ch-status").text,
                li.find_element("css selector", ".ch-attempts").text,
            )
        out[row.get_attribute("data-item-id")] = {
            "status": row.find_element("css selector", ".item-status").text,
            "attempts": row.find_element("css selector", ".item-attempts").text,
            "channels": chans,
        }
    return out


def estimate_on_page(drv: Any) -> dict[str, str]:
    return {dd.get_attribute("data-field"): dd.text for dd in css_all(drv, "#estimate-summary dd")}


def fill_form(drv: Any, scope: str, owner: str = "", item: str = "", since: str = "", force: bool = False):
    from selenium.webdriver.support.ui import Select

    Select(css(drv, "#rp-scope")).select_by_value(scope)
    for sel, value in (("#rp-owner", owner), ("#rp-item", item), ("#rp-since", since)):
        box = css(drv, sel)
        if box.is_enabled():
            box.clear()
            box.send_keys(value)
    if css(drv, "#rp-force").is_selected() != force:
        css(drv, "#rp-force").click()


def click_estimate_and_wait(drv: Any) -> None:
    css(drv, "#rp-estimate").click()
    wait_for(
        "the dry-run estimate or a field error",
        lambda: css(drv, "#estimate").is_displayed() or css(drv, "#rp-field-error").text,
    )


def signed(url: str, creds: Credentials, region: str, method: str = "GET", body: bytes = b"") -> Any:
    headers = {"Content-Type": "application/json"} if body else {}
    h = sigv4.sign(method, url, body, creds, region, headers)
    req = urllib.request.Request(url, data=body or None, headers=h, method=method)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def status_of_direct_call(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def save_screenshot(drv: Any, path: Path) -> Path:
    drv.execute_script("window.scrollTo(0, 0)")
    drv.save_screenshot(str(path))
    print(f"\nadmin console screenshot: {path}")
    return path


# ---------------------------------------------------------------------- the page against a stand-in API


def test_page_escapes_ledger_values_and_names_the_bad_field(tmp_path: Path) -> None:
    """Hostile text in the ledger is shown as text (no element, no script runs); the API's 4xx names its
    field next to the form; a changed form drops the estimate it no longer matches."""
    from tests.unit.admin.fake_api import REGION, SECRETS, FakeApi, item

    api = FakeApi().start()
    api.items["o1"].append(item("q1", "QUARANTINED", {"code": "worker_error", "message": XSS}))
    refused_key = f"uploads/o1/{XSS}/x.mp4"  # as a refusal row holds a key: text, whatever it says
    api.refusals.append(
        {"owner_id": None, "seq": 1, "at": "2026-01-02T03:04:05.000Z", "reason": "bad_id",
         "message": "item_id: item_id must match [A-Za-z0-9_-]{1,64}", "key": refused_key}
    )  # fmt: skip
    try:
        with (
            AdminServer(api.url, Credentials(*next(iter(SECRETS.items()))), REGION) as srv,
            chromium(tmp_path) as d,
        ):
            d.get(srv.url)
            wait_for("the quarantined row", lambda: css(d, '#quarantined-body tr[data-item-id="q1"]'))
            reason = css(d, '#quarantined-body tr[data-item-id="q1"] .item-reason')
            assert reason.text == XSS
            wait_for("the refused upload", lambda: css_all(d, "#refused-body tr"))
            assert css(d, "#refused-body .refused-key").text == refused_key
            assert css(d, "#refused-body .refused-reason").text == "bad_id"
            assert css_all(d, "main img") == [] and css_all(d, "main script") == []
            ch_err = css(d, '#items-body tr[data-item-id="q1"] li[data-channel="image_clip"] .ch-error')
            assert ch_err.text == f"worker_error: {XSS}"
            assert d.execute_script("return window.__xss === undefined")
            fill_form(d, "owner", owner="")
            click_estimate_and_wait(d)
            assert css(d, "#rp-owner").get_attribute("aria-invalid") == "true"
            assert css(d, "#rp-field-error").text.startswith("owner_id: ")
            assert not css(d, "#estimate").is_displayed()
            fill_form(d, "owner", owner="o1")
            click_estimate_and_wait(d)
            assert estimate_on_page(d)["item_count"] == "3"
            css(d, "#rp-owner").send_keys("x")  # the estimate was for o1, not o1x
            assert not css(d, "#estimate").is_displayed()
            assert page_errors(d) == []
    finally:
        api.stop()


def test_page_flow_against_the_stand_in_api(tmp_path: Path) -> None:
    """The same flow as on the local stack, against the stand-in: estimate, confirm, progress, replay."""
    from tests.unit.admin.fake_api import REGION, SECRETS, SPEC, FakeApi, item

    api = FakeApi().start()
    api.items["o1"].append(item("q1", "QUARANTINED", {"code": "worker_error", "message": "boom"}))
    try:
        with (
            AdminServer(api.url, Credentials(*next(iter(SECRETS.items()))), REGION) as srv,
            chromium(tmp_path) as d,
        ):
            d.get(srv.url)
            wait_for("the quarantined row", lambda: css(d, '#quarantined-body tr[data-item-id="q1"]'))
            fill_form(d, "owner", owner="o1", force=True)
            click_estimate_and_wait(d)
            assert estimate_on_page(d)["item_count"] == "3" and api.runs == []
            assert css(d, "#rp-confirm").text == f"Confirm: reprocess 3 items (spec {SPEC})"
            css(d, "#rp-confirm").click()
            wait_for("the run to finish", lambda: css(d, "#run-status").text == "finished")
            assert css(d, "#run-spec").text == SPEC and css(d, "#run-counts").text.startswith("3/3 done")
            assert [r["force"] for r in api.runs] == [True]
            css(d, '#quarantined-body button.replay[data-item-id="q1"]').click()
            run_id = wait_for(
                "the replay's run", lambda: css(d, "#replay-message").get_attribute("data-run-id")
            )
            wait_for(
                "the replay to finish",
                lambda: css(d, f'#runs-body tr[data-run-id="{run_id}"][data-status="finished"]'),
            )
            wait_for("q1 COMPLETE", lambda: items_on_page(d)["q1"]["status"] == "COMPLETE")
            wait_for("an empty quarantine list", lambda: css(d, "#quarantined-empty").is_displayed())
            assert page_errors(d) == []
            save_screenshot(d, tmp_path / "admin-console-stand-in.png")
    finally:
        api.stop()


# ---------------------------------------------------------------------- the page against the local stack


@pytest.fixture
def stack_with_quarantine(dev_model_dir: Path) -> Iterator[tuple[Any, Any, dict[str, Any], Any]]:
    """The local stack on the RunPod-API stand-in: owner `adm` with two COMPLETE photos and one item
    quarantined by injected worker failures (faults off again afterwards)."""
    from shared.aws.ledger import Ledger
    from shared.dev.runpod_standin import Faults, RunPodStandIn
    from shared.dev.stack import LocalStack

    photo = (REPO_ROOT / "infra" / "samples" / "photo.png").read_bytes()
    overrides = {"MAX_ATTEMPTS": "1", "RUNPOD_RETRIES": "1", "BACKOFF_BASE_S": "0.2", "BACKOFF_MAX_S": "0.5"}
    with (
        RunPodStandIn(Faults(fail_retryable=1.0)) as standin,
        LocalStack(dev_model_dir, runpod_url=standin.base, overrides=overrides, sweep_every_s=0.3) as stack,
    ):
        ep = stack.endpoints()
        s3 = stack.client("s3")
        ledger = Ledger(stack.client("dynamodb"), ep["LEDGER_TABLE"])

        def wait_items(want: dict[str, str], timeout_s: float = 30) -> None:
            wait_for(
                f"items {want}",
                lambda: all((ledger.item("adm", i) or {}).get("status") == s for i, s in want.items()),
                timeout_s,
            )

        s3.put_object(Bucket=ep["MEDIA_BUCKET"], Key="uploads/adm/broken/photo.png", Body=photo)
        wait_items({"broken": "QUARANTINED"})
        standin.faults.fail_retryable = 0.0
        for i in ("p1", "p2"):
            s3.put_object(Bucket=ep["MEDIA_BUCKET"], Key=f"uploads/adm/{i}/photo.png", Body=photo)
        wait_items({"p1": "COMPLETE", "p2": "COMPLETE"})
        # and the sweeper's rebuild of the owner's manifest (and search tables) recorded them
        wait_for("the owner's manifest", lambda: (ledger.owner_state("adm") or {}).get("items") == 3)
        yield stack, ledger, ep, standin


def ledger_view(ledger: Any, owner: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    rows = list(ledger.owner_rows(owner))
    for r in rows:
        if r["sk"] == "ITEM":
            out[r["item_id"]] = {"status": r["status"], "attempts": str(r.get("attempts", 0)), "channels": {}}
    for r in rows:
        if r["sk"] != "ITEM" and r["item_id"] in out:
            out[r["item_id"]]["channels"][r["channel"]] = (r["status"], str(r.get("attempts", 0)))
    return out


def test_admin_console_on_the_local_stack(stack_with_quarantine, tmp_path: Path) -> None:
    from shared import spec

    stack, ledger, ep, standin = stack_with_quarantine
    url = ep.get("ReprocessFunctionUrl") or (ep.get("function_urls") or {}).get("reprocess")
    assert url, "the local stack exposes the reprocess function URL"
    region = ep["AWS_DEFAULT_REGION"]
    creds = Credentials(ep["AWS_ACCESS_KEY_ID"], ep["AWS_SECRET_ACCESS_KEY"])

    # no public admin surface: straight to the function URL, unsigned or wrongly signed, is refused
    assert status_of_direct_call(url + "/owners") == 403
    forged = sigv4.sign("GET", url + "/owners", b"", Credentials(creds.access_key, "not-the-secret"), region)
    assert status_of_direct_call(url + "/owners", forged) == 403

    # the quarantine reason carries hostile text from here on (the ledger is what the page shows)
    ddb = stack.client("dynamodb")
    ddb.update_item(
        TableName=ep["LEDGER_TABLE"],
        Key={"pk": {"S": "adm#broken"}, "sk": {"S": "ITEM"}},
        UpdateExpression="SET quarantine_reason = :r",
        ExpressionAttributeValues={":r": {"S": f"injected fault {XSS}"}},
    )

    with AdminServer(url, creds, region) as srv, chromium(tmp_path) as d:
        d.get(srv.url)
        # items by owner, per channel, exactly as in the ledger
        wait_for("owner adm", lambda: css(d, '#owners-body tr[data-owner-id="adm"]')).click()
        wait_for("the ledger's items", lambda: items_on_page(d) == ledger_view(ledger, "adm"))
        assert set(items_on_page(d)) == {"broken", "p1", "p2"}
        assert css(d, "#deployed-spec").text == f"deployed spec version {spec.SPEC_VERSION}"
        owner_row = css(d, '#owners-body tr[data-owner-id="adm"]')
        assert owner_row.find_element("css selector", ".owner-items").text == "3"
        row = wait_for("the quarantined item", lambda: css(d, '#quarantined-body tr[data-item-id="broken"]'))
        assert row.find_element("css selector", ".item-reason").text == f"injected fault {XSS}"
        assert d.execute_script("return window.__xss === undefined") and css_all(d, "main img") == []

        # replay the quarantined item from its button: it runs again, and comes back COMPLETE
        jobs_before = standin.jobs_by_item[("adm", "broken")]
        css(d, '#quarantined-body button.replay[data-item-id="broken"]').click()
        replay_run = wait_for(
            "the replay's run id", lambda: css(d, "#replay-message").get_attribute("data-run-id")
        )
        wait_for(
            "the replay to finish",
            lambda: css(d, f'#runs-body tr[data-run-id="{replay_run}"][data-status="finished"]'),
        )
        wait_for("broken to be COMPLETE", lambda: ledger.item("adm", "broken")["status"] == "COMPLETE", 30)
        assert standin.jobs_by_item[("adm", "broken")] == jobs_before + 1  # one new GPU job
        wait_for("the page to agree with the ledger", lambda: items_on_page(d) == ledger_view(ledger, "adm"))
        wait_for("an empty quarantine list", lambda: css(d, "#quarantined-empty").is_displayed())

        # the API's 4xx name their field, next to the form
        for form, field in (
            (dict(owner="nobody"), "owner_id"),
            (dict(owner="adm", since="yesterday"), "since"),
        ):
            fill_form(d, "owner", **form)
            click_estimate_and_wait(d)
            assert css(d, "#rp-field-error").text.startswith(f"{field}: "), css(d, "#rp-field-error").text
            assert not css(d, "#estimate").is_displayed()

        # the dry run first: what the page shows is the API's estimate; nothing changes
        before = ledger_view(ledger, "adm")
        fill_form(d, "owner", owner="adm", force=True)
        click_estimate_and_wait(d)
        est = signed(
            url + "/reprocess",
            creds,
            region,
            "POST",
            json.dumps({"scope": "owner", "owner_id": "adm", "force": True, "dry_run": True}).encode(),
        )
        shown = estimate_on_page(d)
        assert shown["spec_version"] == est["spec_version"] == spec.SPEC_VERSION
        assert shown["item_count"] == str(est["item_count"]) and shown["channel_count"] == str(
            est["channel_count"]
        )
        assert est["item_count"] == len(before) == 3  # forced: every item, none in flight
        assert est["skipped"] == {"in_flight": 0, "current": 0}
        assert ledger_view(ledger, "adm") == before
        save_screenshot(d, tmp_path / "admin-console-estimate.png")

        # the confirmation starts the run; the page follows it to the end
        css(d, "#rp-confirm").click()
        run_id = wait_for("the run panel", lambda: css(d, "#run-id").text)
        assert css(d, "#run-spec").text == spec.SPEC_VERSION
        wait_for("the run to finish", lambda: css(d, "#run-status").text == "finished", timeout_s=45)
        run = signed(f"{url}/runs/{run_id}", creds, region)
        assert run["status"] == "finished" and run["spec_version"] == spec.SPEC_VERSION
        counts = css(d, "#run-counts").text
        assert (
            counts.startswith(f"{run['done']}/{run['planned']} done")
            and f"{run['skipped']} skipped" in counts
        )
        assert run["done"] + run["failed"] + run["skipped"] == run["planned"] == est["item_count"]
        runs_row = wait_for("the run's row", lambda: css(d, f'#runs-body tr[data-run-id="{run_id}"]'))
        assert runs_row.get_attribute("data-status") == "finished" and run_id != replay_run
        wait_for("the page to agree with the ledger", lambda: items_on_page(d) == ledger_view(ledger, "adm"))
        assert {i["status"] for i in ledger_view(ledger, "adm").values()} == {"COMPLETE"}
        assert page_errors(d) == []
        save_screenshot(d, tmp_path / "admin-console.png")  # docs/admin-console.png is one such, committed
