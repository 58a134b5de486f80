"""Graph-to-graph passes and the pipelines that list them (see base.py for how to write one)."""
