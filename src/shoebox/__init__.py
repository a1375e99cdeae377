"""Shoebox: a self-hosted backend that turns folders of photos into a searchable library."""

__version__ = "0.1.0"
