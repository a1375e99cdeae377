"""Print the README's configuration tables from the settings objects (so the docs cannot drift)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from shoebox.ingest.config import IngestSettings
from shoebox.ml.config import MLSettings

COMPUTED = {
    "model_cache_dir": "`~/.cache/shoebox/models` (`$XDG_CACHE_HOME`)",
    "probe_cache_dir": "`~/.cache/shoebox/probe`",
    "decode_workers": "CPU count",
    "prepare_workers": "CPU count",
    "hash_workers": "max(2, CPU count)",
    "data_dir": "`~/.local/share/shoebox` (`$XDG_DATA_HOME`)",
    "ml_urls": "empty (use `SHOEBOX_ML_URL`)",
    "ingest_roots": "empty: nothing allowed over HTTP",
}


def table(cls: type[BaseSettings]) -> str:
    rows = ["| env var | default | meaning |", "| --- | --- | --- |"]
    for name, field in cls.model_fields.items():
        env = f"SHOEBOX_{name.upper()}"
        if field.default_factory is not None:
            default = COMPUTED[name]
        else:
            default = "unset" if field.default is None else f"`{field.default}`"
        rows.append(f"| `{env}` | {default} | {field.description or ''} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print("### ML inference service\n")
    print(table(MLSettings))
    print("\n### Ingestion service\n")
    print(table(IngestSettings))
