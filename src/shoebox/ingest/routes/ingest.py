"""Ingest jobs: start one for a folder, follow it, list them, cancel one."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shoebox.ingest.context import ServiceContext, get_ctx
from shoebox.protocol import ErrorCode, Job, ShoeboxError

router = APIRouter(prefix="/api/v1/ingest", tags=["ingest"])


class IngestRequest(BaseModel):
    directory_path: str
    collection_name: str | None = None


@router.post("/", status_code=202)
def start_ingest(body: IngestRequest, ctx: ServiceContext = Depends(get_ctx)) -> JSONResponse:
    job = ctx.jobs.submit(body.directory_path, ctx.resolve_collection(body.collection_name))
    return JSONResponse(
        {
            "job_id": job.job_id,
            "status": job.status.value,
            "message": f"ingesting {job.directory_path} into {job.collection_name!r}",
            "collection_name": job.collection_name,
        },
        status_code=202,
    )


@router.get("/status/{job_id}", response_model=Job)
def job_status(job_id: str, ctx: ServiceContext = Depends(get_ctx)) -> Job:
    job = ctx.catalog.get_job(job_id)
    if job is None:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no job {job_id}")
    return job


@router.get("/jobs", response_model=list[Job])
def list_jobs(ctx: ServiceContext = Depends(get_ctx)) -> list[Job]:
    return ctx.catalog.list_jobs()


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: str, ctx: ServiceContext = Depends(get_ctx)) -> Job:
    return ctx.jobs.cancel(job_id)
