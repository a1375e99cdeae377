"""`python -m shoebox.cli …`: the same as the `shoebox` command."""

from shoebox.cli import app

app()
