"""``python -m pipeline.emulator``: the emulator CLI."""

from pipeline.emulator.cli import emulator

if __name__ == "__main__":
    emulator(prog_name="python -m pipeline.emulator")
