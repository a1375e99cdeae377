"""Collections: list, create, delete, info, select; and the embedding cache."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from shoebox.ingest.context import SELECTED_COLLECTION_KEY, ServiceContext, get_ctx
from shoebox.ingest.jobs import validate_collection_name
from shoebox.ingest.migration import migration_status
from shoebox.protocol import ErrorCode, ShoeboxError

router = APIRouter(prefix="/api/v1/collections", tags=["collections"])


class CollectionRequest(BaseModel):
    collection_name: str


class CreateCollectionRequest(CollectionRequest):
    model: str | None = Field(
        default=None, description="The model to embed it with (a hosted model's id or name); default: the ML service's default."
    )


class MigrateRequest(BaseModel):
    model: str = Field(description="The model to switch to: a hosted model's id or name.")


class PruneRequest(BaseModel):
    directory_path: str | None = None  # only the offline files below this folder


def _known(ctx: ServiceContext) -> list[str]:
    return sorted({c.name for c in ctx.catalog.list_collections()})


@router.get("", response_model=list[str])
def list_collections(ctx: ServiceContext = Depends(get_ctx)) -> list[str]:
    return _known(ctx)


@router.post("", status_code=201)
def create_collection(body: CreateCollectionRequest, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    name = validate_collection_name(body.collection_name)
    model_id, dim = None, None
    if body.model:
        info = ctx.ml.model_info(body.model)
        if info is None:
            raise ctx.ml.model_not_hosted(ErrorCode.MODEL_NOT_FOUND, f"no reachable ML service hosts model {body.model!r}")
        model_id, dim = info.model_id, info.embedding_dim
    if not ctx.catalog.add_collection(name, model_id, dim):
        raise ShoeboxError(ErrorCode.CONFLICT, f"collection {name!r} already exists")
    return {"collection_name": name, **({"model_name": model_id} if model_id else {})}


@router.post("/select")
def select_collection(body: CollectionRequest, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    name = validate_collection_name(body.collection_name)
    if ctx.catalog.get_collection(name) is None:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {name!r}")
    ctx.catalog.set_meta(SELECTED_COLLECTION_KEY, name)
    return {"selected_collection": name}


@router.post("/cache/clear")
def clear_cache(ctx: ServiceContext = Depends(get_ctx)) -> dict:
    return {"cleared": ctx.cache.clear()}


@router.delete("/{name}")
def delete_collection(name: str, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    ctx.jobs.delete_collection(validate_collection_name(name))
    return {"deleted": name}


@router.get("/{name}/info")
def collection_info(name: str, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    rec = ctx.catalog.get_collection(name)
    if rec is None:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {name!r}")
    return {
        "name": name,
        "points_count": ctx.store.count(rec.store) if ctx.store.collection_exists(rec.store) else 0,
        "files_count": ctx.catalog.known_count(name),
        "offline_count": ctx.catalog.offline_count(name),
        "model_name": rec.model_name,
        "embedding_dim": rec.embedding_dim,
        "created_at": rec.created_at,
        "selected": ctx.selected_collection() == name,
        "vector_db": ctx.store.kind,
        "index": _index(ctx, rec.store),
        # Its files embedded by other models: kept after a migration (a rollback is one call) or
        # being built by one.
        "models": [
            {"model_name": rec.model_name, "embedding_dim": rec.embedding_dim, "state": "active"},
            *(
                {"model_name": g.model_name, "embedding_dim": g.embedding_dim, "state": g.state}
                for g in ctx.catalog.generations(name)
            ),
        ],
        "migration": migration_status(m) if (m := ctx.catalog.latest_migration(name)) else None,
    }


@router.post("/{name}/migrate", status_code=202)
def migrate_collection(name: str, body: MigrateRequest, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    """Re-embed the collection with another model in the background; searches keep answering with
    the old one until the switch. Migrating back to a kept model is a rollback."""
    m = ctx.migrations.start(validate_collection_name(name), body.model)
    return migration_status(ctx.catalog.get_migration(m.migration_id) or m)


@router.get("/{name}/migrate")
def migration_progress(name: str, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    m = ctx.catalog.latest_migration(validate_collection_name(name))
    if m is None:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"collection {name!r} has never been migrated")
    return migration_status(m)


@router.delete("/{name}/migrate")
def cancel_migration(name: str, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    return migration_status(ctx.migrations.cancel(validate_collection_name(name)))


@router.delete("/{name}/models/{model:path}")
def drop_model(name: str, model: str, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    """Delete the collection's embeddings by a model it no longer answers with."""
    return ctx.migrations.drop_generation(validate_collection_name(name), model)


def _index(ctx: ServiceContext, name: str) -> dict | None:
    if not ctx.store.collection_exists(name):
        return None
    status = ctx.store.index_status(name)
    return {
        "points": status.points,
        "indexed": status.indexed,
        "exact": status.exact,
        "building": status.building,
        "last_build_s": status.last_build_s,
        "error": status.error,
    }


@router.post("/{name}/prune")
def prune_collection(
    name: str, body: PruneRequest | None = None, ctx: ServiceContext = Depends(get_ctx)
) -> dict:
    """Remove the collection's offline files (known files a job found missing in bulk) from the index."""
    return ctx.jobs.prune(name, body.directory_path if body else None)
