"""The sample documents ``flexpipe demo`` summarises (read with importlib.resources)."""
