"""reprocess: the admin API on an IAM-authorised function URL, and the reprocess queue's consumer
(shared/pipeline/lambdas.py: build_reprocess; shared/pipeline/admin.py, reprocess.py)."""

import os

from shared.pipeline.lambdas import build

handler = build("reprocess", os.environ)
