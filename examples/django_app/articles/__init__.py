"""Articles: stored in Django, summarised and labelled by a model through flexpipe."""
