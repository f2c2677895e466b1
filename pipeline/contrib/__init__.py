"""Integrations with web frameworks, each importing its framework only inside itself:
:mod:`flexpipe.contrib.django` (an app for ``INSTALLED_APPS``) and
:mod:`flexpipe.contrib.flask` (the ``FlexPipe(app)`` extension)."""
