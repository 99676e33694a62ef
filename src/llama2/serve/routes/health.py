"""`GET /health` (for load balancers: 200 once the models are loaded) and `GET /metrics` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from llama2.serve.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict:
    models = request.app.state.gateway.models.models
    return {"status": "ok", "models": list(models)}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(request.app.state.gateway.metrics.render(), media_type=CONTENT_TYPE)
