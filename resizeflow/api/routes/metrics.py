"""``GET /metrics``: Prometheus exposition, outside ``/v2.1`` and without a token,
as scrapers expect. It exposes counts and timings by kind, step, host and queue;
nothing about servers or projects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from resizeflow import metrics
from resizeflow.api.deps import ServiceLayer, services

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def scrape(svc: Annotated[ServiceLayer, Depends(services)]) -> Response:
    body = await run_in_threadpool(metrics.render, svc.compute.db, svc.compute.app)
    return Response(content=body, media_type=metrics.CONTENT_TYPE)
