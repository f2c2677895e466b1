"""``python -m flexpipe.cli``: the ``flexpipe`` command."""

from flexpipe.cli import main

main()
