"""RunPod GPU worker entry point: `python -m handlers.runpod_worker` (see handler.py for the inputs)."""
