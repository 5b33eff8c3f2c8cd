"""The RunPod GPU worker: settings, typed job parsing, batching, the job logic and deep health."""
