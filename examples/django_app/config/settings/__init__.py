"""Settings per environment: ``base`` (shared), ``local``, ``production`` and ``test``."""
