"""``python -m flexpipe.emulator``: the emulator CLI."""

from flexpipe.emulator.cli import emulator

if __name__ == "__main__":
    emulator(prog_name="python -m flexpipe.emulator")
