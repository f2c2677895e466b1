"""flexpipe benchmarks: flexpipe, a plain asyncio loop and a blocking Celery task, side by
side on one emulator process. Run ``python -m benchmarks [--quick]`` (``make bench``)."""
