"""``python -m lookbench`` runs the same Typer app as the ``lookbench`` console script."""

from lookbench.cli import app

app(prog_name="lookbench")
