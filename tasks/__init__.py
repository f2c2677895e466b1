"""flexpipe's Celery tasks and the Python API that apps call.

from tasks import enqueue, get, wait, cancel

job_id = enqueue("Summarise this ...", instructions="One paragraph.",
                 callback="myapp.tasks.summary_ready")
"""

from tasks.api import cancel, enqueue, get, wait

__all__ = ["cancel", "enqueue", "get", "wait"]
