"""``python -m pipeline ...`` is the same as ``genpipe ...`` (used by cluster entrypoints)."""

from pipeline.cli import app

app(prog_name="genpipe")
