"""Production settings: everything secret or per-site comes from the environment."""

import os

from config.settings.base import *  # noqa: F403

DEBUG = False
SECRET_KEY = os.environ["NEWSROOM_SECRET_KEY"]
