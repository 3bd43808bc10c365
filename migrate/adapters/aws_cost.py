"""AWS cost APIs: Budgets (the monthly target alert) and Cost Explorer (monthly cost grouped by service).

Moto notes (sandbox/tests): Budgets has no ``update_budget`` (a changed amount is applied as delete + create);
Cost Explorer ``get_cost_and_usage`` answers empty unless results are seeded through
``POST {endpoint}/moto-api/static/ce/cost-and-usage-results``; ``get_cost_forecast`` is not implemented, so the
forecast here is a linear projection of month-to-date spend, labelled as such.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from migrate.adapters.aws import AwsAdapter
from migrate.errors import AdapterError

if TYPE_CHECKING:
    from pathlib import Path

    from migrate.config import EnvConfig


@dataclass(frozen=True)
class BudgetInfo:
    name: str
    amount_usd: float
    threshold_pct: float | None
    actual_usd: float | None
    subscribers: tuple[str, ...] = ()


@dataclass
class CostReport:
    start: str
    end: str
    metric: str
    by_service: dict[str, float] = field(default_factory=dict)
    total_usd: float = 0.0
    estimated: bool = False
    periods: int = 0

    def rows(self) -> list[tuple[str, float]]:
        return sorted(self.by_service.items(), key=lambda kv: (-kv[1], kv[0]))


def month_bounds(today: date, *, previous: bool = False) -> tuple[str, str]:
    """[start, end) of the current month-to-date, or of the previous full month."""
    first = today.replace(day=1)
    if previous:
        prev_last = first - timedelta(days=1)
        return prev_last.replace(day=1).isoformat(), first.isoformat()
    end = today + timedelta(days=1)
    if end <= first:
        end = first + timedelta(days=1)
    return first.isoformat(), end.isoformat()


def linear_forecast(month_to_date_usd: float, today: date) -> float:
    """Month-end projection of month-to-date spend (a stand-in for CE GetCostForecast, which moto lacks)."""
    days = calendar.monthrange(today.year, today.month)[1]
    return round(month_to_date_usd * days / max(today.day, 1), 2)


class CostAdapter:
    def __init__(self, aws: AwsAdapter) -> None:
        self.aws = aws
        self._account: str | None = None

    def account_id(self) -> str:
        if self._account is None:
            self._account = self.aws.account_id()
        return self._account

    # -- Budgets -------------------------------------------------------------------------------------------------
    def describe_budget(self, name: str) -> BudgetInfo | None:
        try:
            resp = self.aws.call("budgets", "describe_budget", AccountId=self.account_id(), BudgetName=name)
        except AdapterError as exc:
            if "NotFound" in exc.what:
                return None
            raise
        budget = resp["Budget"]
        amount = float(budget.get("BudgetLimit", {}).get("Amount", 0))
        actual_raw = budget.get("CalculatedSpend", {}).get("ActualSpend", {}).get("Amount")
        notes = self.aws.call(
            "budgets", "describe_notifications_for_budget", AccountId=self.account_id(), BudgetName=name
        ).get("Notifications", [])
        threshold = float(notes[0]["Threshold"]) if notes else None
        return BudgetInfo(name, amount, threshold, float(actual_raw) if actual_raw is not None else None)

    def upsert_budget(
        self,
        name: str,
        *,
        amount_usd: float,
        threshold_pct: float = 80.0,
        emails: list[str] | None = None,
        sns_topic_arn: str | None = None,
    ) -> str:
        """Create (or replace when the amount/alert changed) a monthly COST budget with an ACTUAL-spend alert.

        AWS requires a subscriber for an alert: without emails/SNS topic the budget has no notification.
        Returns "created" | "replaced" | "unchanged".
        """
        subscribers = [{"SubscriptionType": "EMAIL", "Address": e} for e in (emails or [])]
        if sns_topic_arn:
            subscribers.append({"SubscriptionType": "SNS", "Address": sns_topic_arn})
        want_threshold = float(threshold_pct) if subscribers else None
        current = self.describe_budget(name)
        if (
            current is not None
            and abs(current.amount_usd - amount_usd) < 0.005
            and current.threshold_pct == want_threshold
        ):
            return "unchanged"
        notifications = []
        if subscribers:
            notifications.append(
                {
                    "Notification": {
                        "NotificationType": "ACTUAL",
                        "ComparisonOperator": "GREATER_THAN",
                        "Threshold": float(threshold_pct),
                        "ThresholdType": "PERCENTAGE",
                    },
                    "Subscribers": subscribers,
                }
            )
        if current is not None:
            self.delete_budget(name)
        body = {
            "BudgetName": name,
            "BudgetLimit": {"Amount": f"{amount_usd:.2f}", "Unit": "USD"},
            "TimeUnit": "MONTHLY",
            "BudgetType": "COST",
        }
        self.aws.call(
            "budgets",
            "create_budget",
            AccountId=self.account_id(),
            Budget=body,
            NotificationsWithSubscribers=notifications,
        )
        return "replaced" if current is not None else "created"

    def delete_budget(self, name: str) -> bool:
        try:
            self.aws.call("budgets", "delete_budget", AccountId=self.account_id(), BudgetName=name)
            return True
        except AdapterError as exc:
            if "NotFound" in exc.what:
                return False
            raise

    # -- Cost Explorer -------------------------------------------------------------------------------------------
    def cost_by_service(self, start: str, end: str, *, metric: str = "UnblendedCost") -> CostReport:
        """Monthly cost in [start, end) grouped by SERVICE (all pages)."""
        report = CostReport(start=start, end=end, metric=metric)
        kwargs: dict[str, Any] = {
            "TimePeriod": {"Start": start, "End": end},
            "Granularity": "MONTHLY",
            "Metrics": [metric],
            "GroupBy": [{"Type": "DIMENSION", "Key": "SERVICE"}],
        }
        for _ in range(50):
            resp = self.aws.call("ce", "get_cost_and_usage", **kwargs)
            for period in resp.get("ResultsByTime", []):
                report.periods += 1
                report.estimated = report.estimated or bool(period.get("Estimated"))
                groups = period.get("Groups", [])
                for group in groups:
                    service = str(group.get("Keys", ["unknown"])[0])
                    metrics = group.get("Metrics", {})
                    amount = float(metrics.get(metric, next(iter(metrics.values()), {"Amount": 0})).get("Amount", 0))
                    report.by_service[service] = round(report.by_service.get(service, 0.0) + amount, 6)
                if not groups:
                    total = period.get("Total", {})
                    amount_raw = total.get(metric, next(iter(total.values()), None)) if total else None
                    if amount_raw:
                        report.by_service["(ungrouped)"] = round(
                            report.by_service.get("(ungrouped)", 0.0) + float(amount_raw.get("Amount", 0)), 6
                        )
            token = resp.get("NextPageToken")
            if not token:
                break
            kwargs["NextPageToken"] = token
        report.total_usd = round(sum(report.by_service.values()), 2)
        return report


def from_config(
    env: EnvConfig, *, project_root: Path | None = None, state_dir: Path | None = None, **_: Any
) -> CostAdapter:
    return CostAdapter(AwsAdapter(env.aws.region, env.aws.endpoint_url, env.aws.profile))
