"""Shoebox benchmarks: `python -m bench [--only ml,ingest,search] [--quick]` (see bench/README.md)."""
