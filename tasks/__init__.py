"""flexpipe's Celery side: the tasks (``steps``, ``sweeper``, ``schedule``), the API that
apps call (``api``, re-exported by :mod:`flexpipe`), and the per-process runtime.

Importing this package imports nothing else; ``flexpipe.tasks.api`` builds the Celery
app's configuration on first use, not at import.
"""
