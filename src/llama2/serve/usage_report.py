"""Usage for the admin page: requests, errors and tokens per user and model over a period, what the
external models' tokens cost, and the tokens of each day per model (the chart).

Everything is summed from the usage records (one per request, API and web chat alike) by the
database. Costs are tokens times the price of the model's upstream name in `providers/prices.yaml`
(plus the providers file's `prices:`), at today's prices; local models cost nothing here, and an
external model without a price has an unknown cost (None) rather than a made-up one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import case, func, select

from llama2.providers.prices import Price, lookup_price, price_table
from llama2.serve.models import ModelPool
from llama2.serve.store import Store, Usage


@dataclass(frozen=True)
class UsageLine:
    """One user's use of one model (all their keys and the web chat together)."""

    user_email: str | None
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    external: bool
    cost_usd: float | None  # None: local (free here) or external without a known price

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class UsageReport:
    since: datetime
    until: datetime
    lines: list[UsageLine]  # most tokens first
    days: list[date]  # every day of the period, oldest first
    daily_tokens: dict[str, list[int]]  # model -> tokens per day (aligned with `days`)

    @property
    def requests(self) -> int:
        return sum(line.requests for line in self.lines)

    @property
    def errors(self) -> int:
        return sum(line.errors for line in self.lines)

    @property
    def tokens(self) -> int:
        return sum(line.tokens for line in self.lines)

    @property
    def cost_usd(self) -> float:
        return sum(line.cost_usd or 0.0 for line in self.lines)

    @property
    def unpriced(self) -> list[str]:
        """External models used in the period whose price is unknown."""
        return sorted({line.model for line in self.lines if line.external and line.cost_usd is None})


def pricing(pool: ModelPool) -> tuple[Callable[[str], Price | None], Callable[[str], bool]]:
    """(price of a served model's tokens, whether a served model is external) for the models a pool serves."""
    def price_of(name: str) -> Price | None:
        served = pool.models.get(name)
        if served is None or not served.entry.is_external:
            return None
        settings, upstream = getattr(served.provider, "settings", None), getattr(served.provider, "model", None)
        if settings is None or not isinstance(upstream, str):
            return None
        return lookup_price(upstream, price_table(settings.prices))

    def is_external(name: str) -> bool:
        served = pool.models.get(name)
        return served is not None and served.entry.is_external

    return price_of, is_external


def usage_report(store: Store, since: datetime, until: datetime, price_of: Callable[[str], Price | None],
                 is_external: Callable[[str], bool]) -> UsageReport:
    """Usage in [since, until) — whole UTC days, both at midnight — per user and model, and per day and model."""
    period = (Usage.created_at >= since, Usage.created_at < until)
    per_user = select(Usage.user_email, Usage.model, func.count(), func.sum(case((Usage.status >= 400, 1), else_=0)),
                      func.sum(Usage.prompt_tokens), func.sum(Usage.completion_tokens)
                      ).where(*period).group_by(Usage.user_email, Usage.model)
    with store.reading() as session:
        day = _utc_day(session.get_bind().dialect.name)
        per_day = select(day, Usage.model, func.sum(Usage.prompt_tokens + Usage.completion_tokens)
                         ).where(*period).group_by(day, Usage.model)
        totals = list(session.execute(per_user))
        daily = list(session.execute(per_day))
    lines = []
    for email, model, requests, errors, prompt, completion in totals:
        price = price_of(model)
        cost = price.cost(int(prompt), int(completion)) if price is not None else None
        lines.append(UsageLine(email, model, int(requests), int(errors), int(prompt), int(completion),
                               is_external(model), cost))
    lines.sort(key=lambda line: (-line.tokens, line.user_email or "", line.model))
    days = [since.date() + timedelta(days=i) for i in range((until - since).days)]
    index = {d.isoformat(): i for i, d in enumerate(days)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for day_text, model, tokens in daily:
        if str(day_text) in index:
            series[model][index[str(day_text)]] += int(tokens or 0)
    return UsageReport(since, until, lines, days, dict(series))


def _utc_day(dialect: str):
    """The usage row's UTC day as YYYY-MM-DD (SQLite stores UTC text; PostgreSQL converts from timestamptz)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", Usage.created_at), "YYYY-MM-DD")
    return func.substr(Usage.created_at, 1, 10)
