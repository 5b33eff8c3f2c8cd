"""The search index through the real handlers on moto: an upload settles, the sweeper writes its rows
to LanceDB on moto's S3 under search/{spec_version}/{owner}/, `se search`'s in-process query finds the
moment (real MiniLM) with a presigned media URL; the S3 delete event takes it out again."""

from __future__ import annotations

import pytest

from shared import spec
from shared.dev.stack_cli import run_search
from shared.pipeline import keys
from shared.settings import DEFAULT_MODEL_DIR

pytestmark = pytest.mark.integration


def test_settle_index_search_remove_on_moto_s3(make_harness, text_model) -> None:
    h = make_harness(search=True)
    for item in ("clip", "other"):
        h.put(f"uploads/o1/{item}/clip.mp4")
    h.deliver()
    # both completions have marked the owner's manifest (on_job_done marks just after the status)
    h.wait(lambda: h.done("o1", "clip") and h.done("o1", "other"))
    h.wait(lambda: (h.ledger.owner_state("o1") or {}).get("dirty_gen") == 2)
    assert h.sweep() == {"manifest": 1}
    tables = h.keys(f"search/{spec.SPEC_VERSION}/o1/")
    assert any(k.startswith(f"search/{spec.SPEC_VERSION}/o1/text.lance/") for k in tables)
    assert keys.search_current_key("o1") in h.keys("search/current/")
    request = {"owner_id": "o1", "text": "the canned transcript of a load test", "k": 5}
    env = {**h.env, "MODEL_DIR": str(DEFAULT_MODEL_DIR), "TEXT_PRECISION": "fp32", "SEARCH_CACHE_S": "0"}
    answer = run_search(request, env)
    assert answer["spec_version"] == spec.SPEC_VERSION
    assert {hit["item_id"] for hit in answer["hits"]} == {"clip", "other"}
    top = answer["hits"][0]
    assert (top["start_s"], top["end_s"]) == (0.0, 1.0) and "transcript" in top["channels"]
    assert "X-Amz-Signature" in top["media_url"] and top["media_url"].endswith("#t=0")
    h.s3.delete_object(Bucket=h.bucket, Key="uploads/o1/clip/clip.mp4")
    h.deliver()
    h.sweep()
    answer = run_search(request, env)
    assert {hit["item_id"] for hit in answer["hits"]} == {"other"}
