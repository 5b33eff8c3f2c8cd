"""`python -m handlers.runpod_worker [--rp_serve_api --rp_api_port N | --test_input JSON]`."""

import sys

from handlers.runpod_worker.handler import main

sys.exit(main())
