"""The admin pages that only read: usage per user and model (with the chart and costs) over the last
7, 30 or 90 days, and the audit log, newest first, a page at a time."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from llama2.serve.audit import ACTIONS
from llama2.serve.sessions import SignedIn
from llama2.serve.usage_report import pricing, usage_report
from llama2.serve.web.admin_access import admin_user, render
from llama2.serve.web.admin_chart import daily_tokens_chart
from llama2.serve.web.security import SecureRoute
from llama2.serve.web.state import web_state

router = APIRouter(prefix="/admin", route_class=SecureRoute, include_in_schema=False)
PERIODS = (7, 30, 90)
AUDIT_PER_PAGE = 50


@router.get("/usage")
def usage_page(request: Request, days: int = 30, user: SignedIn = Depends(admin_user)) -> Response:
    web = web_state(request)
    days = days if days in PERIODS else 30
    until = datetime.combine(datetime.now(timezone.utc).date() + timedelta(days=1), time(0), tzinfo=timezone.utc)
    since = until - timedelta(days=days)
    report = usage_report(web.gateway.store, since, until, *pricing(web.gateway.models))
    chart = daily_tokens_chart(report.days, report.daily_tokens)
    return render(request, user, "admin_usage.html", "usage",
                  {"report": report, "chart": chart, "days": days, "periods": PERIODS})


@router.get("/audit")
def audit_page(request: Request, page: int = Query(default=1, ge=1, le=10**9),
               user: SignedIn = Depends(admin_user)) -> Response:
    log = web_state(request).audit.page(page, per_page=AUDIT_PER_PAGE)
    return render(request, user, "admin_audit.html", "audit", {"log": log, "actions": ACTIONS})
