"""Route53 for the DNS cutover: hosted zones, weighted record sets (SetIdentifier), change batches and INSYNC polling.

Built on :class:`migrate.adapters.aws.AwsAdapter` (same session, ``endpoint_url`` = moto server in the sandbox and
tests, botocore errors translated). Record names are handled without the trailing dot on the way in and out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.adapters.aws import AwsAdapter
from migrate.errors import AdapterError, TransientError

if TYPE_CHECKING:
    from pathlib import Path

    from migrate.config import EnvConfig


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def _bare(name: str) -> str:
    return name.rstrip(".").lower()


@dataclass(frozen=True)
class RecordSet:
    """One record set as Route53 stores it. ``set_id``/``weight`` are None for a simple (non-weighted) record;
    ``alias`` = (hosted zone id of the target, target DNS name) for an alias record (no TTL, no values)."""

    name: str
    type: str
    ttl: int | None = None
    values: tuple[str, ...] = ()
    set_id: str | None = None
    weight: int | None = None
    alias: tuple[str, str] | None = None
    health_check_id: str | None = None

    @property
    def is_weighted(self) -> bool:
        return self.set_id is not None

    def to_api(self) -> dict[str, Any]:
        body: dict[str, Any] = {"Name": _fqdn(self.name), "Type": self.type}
        if self.set_id is not None:
            body["SetIdentifier"] = self.set_id
            body["Weight"] = int(self.weight or 0)
        if self.health_check_id:
            body["HealthCheckId"] = self.health_check_id
        if self.alias is not None:
            body["AliasTarget"] = {
                "HostedZoneId": self.alias[0],
                "DNSName": _fqdn(self.alias[1]),
                "EvaluateTargetHealth": True,
            }
        else:
            body["TTL"] = int(self.ttl if self.ttl is not None else 300)
            body["ResourceRecords"] = [{"Value": v} for v in self.values]
        return body

    @classmethod
    def from_api(cls, raw: dict[str, Any]) -> RecordSet:
        alias_raw = raw.get("AliasTarget")
        alias = (str(alias_raw["HostedZoneId"]), _bare(str(alias_raw["DNSName"]))) if alias_raw else None
        weight = raw.get("Weight")
        return cls(
            name=_bare(str(raw["Name"])),
            type=str(raw["Type"]),
            ttl=int(raw["TTL"]) if raw.get("TTL") is not None else None,
            values=tuple(str(r["Value"]) for r in raw.get("ResourceRecords", [])),
            set_id=raw.get("SetIdentifier"),
            weight=int(weight) if weight is not None else None,
            alias=alias,
            health_check_id=raw.get("HealthCheckId"),
        )


@dataclass(frozen=True)
class WeightedPair:
    """The two weighted records of a cutover (old stack / new stack) behind one name; the weight arithmetic."""

    name: str
    type: str
    old_target: str
    new_target: str
    old_set_id: str = "old-stack"
    new_set_id: str = "new-stack"
    ttl: int = 60
    new_alias_zone_id: str | None = None
    health_check_id: str | None = None  # attached to the NEW record: Route53 stops answering it when unhealthy

    def records(self, new_weight: int) -> list[RecordSet]:
        if not 0 <= new_weight <= 100:
            raise AdapterError(f"weight {new_weight} is not a percentage", "weights are 0..100", "report this as a bug")
        old = RecordSet(self.name, self.type, self.ttl, (self.old_target,), self.old_set_id, 100 - new_weight)
        if self.new_alias_zone_id:
            alias = (self.new_alias_zone_id, self.new_target)
            new = RecordSet(self.name, self.type, None, (), self.new_set_id, new_weight, alias, self.health_check_id)
        else:
            new = RecordSet(
                self.name,
                self.type,
                self.ttl,
                (self.new_target,),
                self.new_set_id,
                new_weight,
                None,
                self.health_check_id,
            )
        return [old, new]


@dataclass
class ChangeResult:
    change_id: str
    status: str
    polls: int = 0
    waited_s: float = 0.0
    statuses: list[str] = field(default_factory=list)


class Route53Adapter:
    """Weighted-record operations used by the cutover. Every call goes through ``AwsAdapter.call`` (translated)."""

    def __init__(
        self,
        aws: AwsAdapter,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.aws = aws
        self._clock = clock
        self._sleep = sleep

    # -- zones ---------------------------------------------------------------------------------------------------
    def find_zone(self, domain: str) -> str | None:
        """The id of the most specific hosted zone that contains ``domain`` (e.g. ``api.x.com`` -> zone ``x.com``)."""
        labels = _bare(domain).split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            resp = self.aws.call("route53", "list_hosted_zones_by_name", DNSName=_fqdn(candidate), MaxItems="10")
            for zone in resp.get("HostedZones", []):
                if _bare(str(zone["Name"])) == candidate:
                    return str(zone["Id"]).split("/")[-1]
        return None

    def zone_name(self, zone_id: str) -> str:
        resp = self.aws.call("route53", "get_hosted_zone", Id=zone_id)
        return _bare(str(resp["HostedZone"]["Name"]))

    def create_zone(self, domain: str, *, caller_reference: str) -> str:
        """Create a public hosted zone (idempotent through ``caller_reference`` and a prior lookup)."""
        existing = self.find_zone(domain)
        if existing is not None and self.zone_name(existing) == _bare(domain):
            return existing
        resp = self.aws.call(
            "route53",
            "create_hosted_zone",
            Name=_fqdn(domain),
            CallerReference=caller_reference,
            HostedZoneConfig={"Comment": "created by bpmigrate", "PrivateZone": False},
        )
        return str(resp["HostedZone"]["Id"]).split("/")[-1]

    # -- records -------------------------------------------------------------------------------------------------
    def record_sets(self, zone_id: str, name: str, rtype: str | None = None) -> list[RecordSet]:
        """Every record set named exactly ``name`` (all set identifiers), optionally of one type."""
        wanted = _bare(name)
        out: list[RecordSet] = []
        kwargs: dict[str, Any] = {"HostedZoneId": zone_id, "StartRecordName": _fqdn(name), "MaxItems": "100"}
        if rtype:
            kwargs["StartRecordType"] = rtype
        for _ in range(100):  # bounded pagination
            resp = self.aws.call("route53", "list_resource_record_sets", **kwargs)
            done = False
            for raw in resp.get("ResourceRecordSets", []):
                rec = RecordSet.from_api(raw)
                if rec.name != wanted:
                    done = True
                    break
                if rtype is None or rec.type == rtype:
                    out.append(rec)
            if done or not resp.get("IsTruncated"):
                break
            kwargs["StartRecordName"] = resp["NextRecordName"]
            kwargs["StartRecordType"] = resp["NextRecordType"]
            if resp.get("NextRecordIdentifier"):
                kwargs["StartRecordIdentifier"] = resp["NextRecordIdentifier"]
        return out

    def weights(self, zone_id: str, name: str, rtype: str) -> dict[str, int]:
        """Current weight per SetIdentifier of the weighted records ``name``/``rtype``."""
        return {r.set_id: int(r.weight or 0) for r in self.record_sets(zone_id, name, rtype) if r.set_id is not None}

    def change(
        self,
        zone_id: str,
        *,
        upserts: Sequence[RecordSet] = (),
        deletes: Sequence[RecordSet] = (),
        comment: str = "bpmigrate",
    ) -> str:
        """Submit one atomic change batch (deletes first, then upserts); returns the change id."""
        changes = [{"Action": "DELETE", "ResourceRecordSet": r.to_api()} for r in deletes]
        changes += [{"Action": "UPSERT", "ResourceRecordSet": r.to_api()} for r in upserts]
        if not changes:
            raise AdapterError("empty Route53 change batch", "nothing to change was given", "report this as a bug")
        resp = self.aws.call(
            "route53",
            "change_resource_record_sets",
            HostedZoneId=zone_id,
            ChangeBatch={"Comment": comment[:256], "Changes": changes},
        )
        return str(resp["ChangeInfo"]["Id"]).split("/")[-1]

    def shift(
        self,
        zone_id: str,
        pair: WeightedPair,
        new_weight: int,
        *,
        deletes: Sequence[RecordSet] = (),
        comment: str = "",
        timeout_s: float = 600.0,
        poll_s: float = 5.0,
    ) -> dict[str, Any]:
        """Set the pair to ``new_weight`` % new / the rest old in one batch and wait until INSYNC (evidence dict)."""
        change_id = self.change(
            zone_id,
            upserts=pair.records(new_weight),
            deletes=deletes,
            comment=comment or f"bpmigrate dns-cutover {new_weight}% new",
        )
        synced = self.wait_insync(change_id, timeout_s=timeout_s, poll_s=poll_s)
        return {
            "change_id": change_id,
            "status": synced.status,
            "polls": synced.polls,
            "waited_s": round(synced.waited_s, 3),
        }

    # -- health checks -------------------------------------------------------------------------------------------
    def ensure_health_check(self, url: str, *, caller_reference: str, failure_threshold: int = 3) -> str:
        """An HTTP(S) health check on ``url`` (idempotent by caller reference); returns its id."""
        from urllib.parse import urlsplit

        for hc in self.aws.call("route53", "list_health_checks").get("HealthChecks", []):
            if hc.get("CallerReference") == caller_reference:
                return str(hc["Id"])
        parts = urlsplit(url)
        https = parts.scheme == "https"
        config: dict[str, Any] = {
            "Type": "HTTPS" if https else "HTTP",
            "FullyQualifiedDomainName": parts.hostname or "",
            "Port": parts.port or (443 if https else 80),
            "ResourcePath": parts.path or "/",
            "RequestInterval": 10,
            "FailureThreshold": failure_threshold,
        }
        resp = self.aws.call(
            "route53", "create_health_check", CallerReference=caller_reference, HealthCheckConfig=config
        )
        return str(resp["HealthCheck"]["Id"])

    def health_check(self, health_check_id: str) -> dict[str, Any] | None:
        try:
            resp = self.aws.call("route53", "get_health_check", HealthCheckId=health_check_id)
        except AdapterError:
            return None
        return dict(resp.get("HealthCheck") or {})

    def delete_health_check(self, health_check_id: str) -> bool:
        if self.health_check(health_check_id) is None:
            return False
        self.aws.call("route53", "delete_health_check", HealthCheckId=health_check_id)
        return True

    def change_status(self, change_id: str) -> str:
        resp = self.aws.call("route53", "get_change", Id=change_id)
        return str(resp["ChangeInfo"]["Status"])

    def wait_insync(self, change_id: str, *, timeout_s: float = 300.0, poll_s: float = 5.0) -> ChangeResult:
        """Poll ``get_change`` until INSYNC, bounded by a deadline; raises TransientError when it is not reached."""
        start = self._clock()
        deadline = start + max(0.0, timeout_s)
        result = ChangeResult(change_id=change_id, status="PENDING")
        while True:
            status = self.change_status(change_id)
            result.polls += 1
            result.statuses.append(status)
            result.status = status
            result.waited_s = self._clock() - start
            if status == "INSYNC":
                return result
            if self._clock() >= deadline:
                raise TransientError(
                    f"Route53 change {change_id} still {status} after {result.waited_s:.0f}s ({result.polls} polls)",
                    "Route53 has not propagated the change to all its name servers within the deadline",
                    f"check with `aws route53 get-change --id {change_id}`; re-run the same bpmigrate command (it resumes)",
                    service="route53",
                )
            self._sleep(min(poll_s, max(0.0, deadline - self._clock())))


def from_config(
    env: EnvConfig, *, project_root: Path | None = None, state_dir: Path | None = None, **_: Any
) -> Route53Adapter:
    return Route53Adapter(AwsAdapter(env.aws.region, env.aws.endpoint_url, env.aws.profile))
