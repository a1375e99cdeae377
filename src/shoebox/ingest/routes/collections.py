"""Collections: list, create, delete, info, select; and the embedding cache."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from shoebox.ingest.context import SELECTED_COLLECTION_KEY, ServiceContext, get_ctx
from shoebox.ingest.jobs import validate_collection_name
from shoebox.protocol import ErrorCode, ShoeboxError

router = APIRouter(prefix="/api/v1/collections", tags=["collections"])


class CollectionRequest(BaseModel):
    collection_name: str


class PruneRequest(BaseModel):
    directory_path: str | None = None  # only the offline files below this folder


def _known(ctx: ServiceContext) -> list[str]:
    return sorted({c.name for c in ctx.catalog.list_collections()})


@router.get("", response_model=list[str])
def list_collections(ctx: ServiceContext = Depends(get_ctx)) -> list[str]:
    return _known(ctx)


@router.post("", status_code=201)
def create_collection(body: CollectionRequest, ctx: ServiceContext = Depends(get_ctx)) -> dict:
    name = validate_collection_name(body.collection_name)
    if not ctx.catalog.add_collection(name):
        raise ShoeboxError(ErrorCode.CONFLICT, f"collection {name!r} already exists")
    return {"collection_name": name}


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
        "points_count": ctx.store.count(name),
        "files_count": ctx.catalog.known_count(name),
        "offline_count": ctx.catalog.offline_count(name),
        "model_name": rec.model_name,
        "embedding_dim": rec.embedding_dim,
        "created_at": rec.created_at,
        "selected": ctx.selected_collection() == name,
        "vector_db": ctx.store.kind,
        "index": _index(ctx, name),
    }


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
