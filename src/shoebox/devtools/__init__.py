"""Tools for tests, benchmarks and demos (generated photos, test models); never imported by the services."""
