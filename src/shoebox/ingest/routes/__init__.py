"""HTTP routes of the ingestion service, one module per area of API.md."""
