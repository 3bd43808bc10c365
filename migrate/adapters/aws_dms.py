"""AWS DMS driver for pg-sync (``driver = "aws-dms"``): for databases too large for one machine's copy.

A replication instance, a PostgreSQL source endpoint and a target endpoint, and one ``full-load-and-cdc`` task with
validation enabled (``ValidationSettings.EnableValidation``). Every create is preceded by a describe (idempotent:
re-running converges); status and validation state are read back (``describe_replication_tasks`` and, where the
service offers it, ``describe_table_statistics``). Teardown deletes task, endpoints and instance, each only if
present. Passwords come from the environment variables named in migrate.toml and never reach outputs or logs.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError, StepFailed
from migrate.redact import register

if TYPE_CHECKING:
    from migrate.adapters.aws import AwsAdapter

TASK_SETTINGS: dict[str, Any] = {
    "TargetMetadata": {"SupportLobs": True, "FullLobMode": False, "LobMaxSize": 64, "TargetSchema": ""},
    "FullLoadSettings": {"TargetTablePrepMode": "DO_NOTHING", "MaxFullLoadSubTasks": 8},
    "ValidationSettings": {"EnableValidation": True, "ThreadCount": 5, "FailureMaxCount": 10000},
    "Logging": {"EnableLogging": True},
}
TABLE_MAPPINGS: dict[str, Any] = {
    "rules": [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "rule-name": "all-user-tables",
            "object-locator": {"schema-name": "%", "table-name": "%"},
            "rule-action": "include",
        },
        {
            "rule-type": "selection",
            "rule-id": "2",
            "rule-name": "not-bpmigrate-state",
            "object-locator": {"schema-name": "_bpmigrate", "table-name": "%"},
            "rule-action": "exclude",
        },
    ]
}


@dataclass(frozen=True)
class DmsNames:
    instance: str
    source: str
    target: str
    task: str

    @classmethod
    def for_env(cls, env_name: str, override: str = "") -> DmsNames:
        base = re.sub(r"[^a-z0-9-]", "-", (override or f"bpmigrate-{env_name}").lower()).strip("-")[:40]
        return cls(f"{base}-ri", f"{base}-source", f"{base}-target", f"{base}-task")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class DmsDriver:
    def __init__(
        self,
        aws: AwsAdapter,
        names: DmsNames,
        *,
        source: dict[str, Any],
        target: dict[str, Any],
        instance_class: str = "dms.r6i.large",
        storage_gb: int = 100,
        source_password_env: str | None = None,
        target_password_env: str | None = None,
        subnet_group: str | None = None,
        security_group_ids: list[str] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.aws = aws
        self.names = names
        self.source = source
        self.target = target
        self.instance_class = instance_class
        self.storage_gb = storage_gb
        self.source_password_env = source_password_env
        self.target_password_env = target_password_env
        self.subnet_group = subnet_group
        self.security_group_ids = list(security_group_ids or [])
        self.poll_s = poll_s

    # -- reads -------------------------------------------------------------------------------------------------
    def _instance(self) -> dict[str, Any] | None:
        found = self.aws.call(
            "dms",
            "describe_replication_instances",
            Filters=[{"Name": "replication-instance-id", "Values": [self.names.instance]}],
        )
        items = [
            i
            for i in found.get("ReplicationInstances", [])
            if i.get("ReplicationInstanceIdentifier") == self.names.instance
        ]
        return items[0] if items else None

    def _endpoint(self, ident: str) -> dict[str, Any] | None:
        found = self.aws.call("dms", "describe_endpoints", Filters=[{"Name": "endpoint-id", "Values": [ident]}])
        items = [e for e in found.get("Endpoints", []) if e.get("EndpointIdentifier") == ident]
        return items[0] if items else None

    def _task(self) -> dict[str, Any] | None:
        found = self.aws.call(
            "dms", "describe_replication_tasks", Filters=[{"Name": "replication-task-id", "Values": [self.names.task]}]
        )
        items = [t for t in found.get("ReplicationTasks", []) if t.get("ReplicationTaskIdentifier") == self.names.task]
        return items[0] if items else None

    def inventory(self) -> list[tuple[str, str, bool]]:
        return [
            ("replication instance", self.names.instance, self._instance() is not None),
            ("source endpoint", self.names.source, self._endpoint(self.names.source) is not None),
            ("target endpoint", self.names.target, self._endpoint(self.names.target) is not None),
            ("full-load-and-cdc task", self.names.task, self._task() is not None),
        ]

    def _wait(self, what: str, read: Any, ok: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            obj = read() or {}
            status = str(obj.get("ReplicationInstanceStatus") or obj.get("Status") or "")
            if status in ok:
                return dict(obj)
            if status in ("failed", "deleted") or time.monotonic() >= deadline:
                raise StepFailed(
                    f"DMS {what} is {status or 'absent'} (waited {timeout:g}s for {'/'.join(ok)})",
                    str(obj.get("LastFailureMessage") or obj.get("StopReason") or "see the DMS console"),
                    "fix the cause shown in the DMS console, then re-run: bpmigrate apply --step pg-sync",
                )
            time.sleep(self.poll_s)

    # -- writes ------------------------------------------------------------------------------------------------
    def _password(self, env_name: str | None) -> str | None:
        if not env_name:
            return None
        value = os.environ.get(env_name)
        if value:
            register(value)
        return value

    def _ensure_endpoint(self, ident: str, kind: str, spec: dict[str, Any], password_env: str | None) -> str:
        existing = self._endpoint(ident)
        if existing:
            return str(existing["EndpointArn"])
        kw: dict[str, Any] = {
            "EndpointIdentifier": ident,
            "EndpointType": kind,
            "EngineName": "postgres",
            "ServerName": str(spec["host"]),
            "Port": int(spec["port"]),
            "DatabaseName": str(spec["dbname"]),
            "Username": str(spec["user"]),
        }
        password = self._password(password_env)
        if password:
            kw["Password"] = password
        elif not self.aws.is_emulated:
            raise StepFailed(
                f"no password for the DMS {kind} endpoint",
                f"the environment variable {password_env or '(password_env not set)'} is empty",
                f"export {password_env or 'the variable named by postgres.' + kind + '.password_env'} and re-run",
            )
        if kind == "source":
            kw["PostgreSQLSettings"] = {"PluginName": "test-decoding", "HeartbeatEnable": True}
        out = self.aws.call("dms", "create_endpoint", **kw)
        return str(out["Endpoint"]["EndpointArn"])

    def ensure(self, timeout: float = 1800.0) -> dict[str, Any]:
        """Create what is missing, start the task; returns ARNs, status and validation state."""
        inst = self._instance()
        if inst is None:
            network: dict[str, Any] = {}
            if self.subnet_group:
                network["ReplicationSubnetGroupIdentifier"] = self.subnet_group
            if self.security_group_ids:
                network["VpcSecurityGroupIds"] = self.security_group_ids
            self.aws.call(
                "dms",
                "create_replication_instance",
                ReplicationInstanceIdentifier=self.names.instance,
                ReplicationInstanceClass=self.instance_class,
                AllocatedStorage=self.storage_gb,
                PubliclyAccessible=False,
                MultiAZ=False,
                **network,
            )
        inst = self._wait("replication instance", self._instance, ("available",), timeout)
        source_arn = self._ensure_endpoint(self.names.source, "source", self.source, self.source_password_env)
        target_arn = self._ensure_endpoint(self.names.target, "target", self.target, self.target_password_env)
        task = self._task()
        if task is None:
            task = self.aws.call(
                "dms",
                "create_replication_task",
                ReplicationTaskIdentifier=self.names.task,
                SourceEndpointArn=source_arn,
                TargetEndpointArn=target_arn,
                ReplicationInstanceArn=inst["ReplicationInstanceArn"],
                MigrationType="full-load-and-cdc",
                TableMappings=json.dumps(TABLE_MAPPINGS),
                ReplicationTaskSettings=json.dumps(TASK_SETTINGS),
            )["ReplicationTask"]
        self._start(timeout)
        self._wait("replication task", self._task, ("running",), timeout)
        return {
            "instance_arn": inst["ReplicationInstanceArn"],
            "source_endpoint_arn": source_arn,
            "target_endpoint_arn": target_arn,
            **self.status(),
        }

    def _start(self, timeout: float) -> None:
        """Start (or resume) the task once DMS accepts it: a task still 'creating' refuses; retry until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            current = self._task() or {}
            status = str(current.get("Status") or "")
            if status in ("running", "starting"):
                return
            if status in ("failed", "deleting", ""):
                raise StepFailed(
                    f"DMS replication task {self.names.task} is {status or 'absent'}",
                    str(current.get("LastFailureMessage") or current.get("StopReason") or "see the DMS console"),
                    "fix the cause shown in the DMS console, then re-run: bpmigrate apply --step pg-sync",
                )
            kind = "resume-processing" if status == "stopped" else "start-replication"
            try:
                self.aws.call(
                    "dms",
                    "start_replication_task",
                    ReplicationTaskArn=current["ReplicationTaskArn"],
                    StartReplicationTaskType=kind,
                )
                return
            except AdapterError as exc:
                if "InvalidResourceState" not in exc.what or time.monotonic() >= deadline:
                    raise
            time.sleep(self.poll_s)

    def status(self) -> dict[str, Any]:
        task = self._task()
        if task is None:
            return {
                "task_arn": None,
                "status": "absent",
                "full_load_progress": None,
                "validation_enabled": False,
                "validation_state": "absent",
                "migration_type": None,
            }
        stats = task.get("ReplicationTaskStats") or {}
        try:
            settings = json.loads(task.get("ReplicationTaskSettings") or "{}")
        except ValueError:
            settings = {}
        enabled = bool((settings.get("ValidationSettings") or {}).get("EnableValidation"))
        return {
            "task_arn": task.get("ReplicationTaskArn"),
            "status": task.get("Status"),
            "migration_type": task.get("MigrationType"),
            "full_load_progress": stats.get("FullLoadProgressPercent"),
            "tables_errored": stats.get("TablesErrored"),
            "validation_enabled": enabled,
            "validation_state": self._validation_state(str(task.get("ReplicationTaskArn"))) if enabled else "disabled",
        }

    def _validation_state(self, task_arn: str) -> str:
        """Worst per-table ValidationState (describe_table_statistics); 'unknown' where the API is unavailable."""
        try:
            out = self.aws.call("dms", "describe_table_statistics", ReplicationTaskArn=task_arn)
        except AdapterError as exc:
            return f"unknown ({exc.what})"
        states = [str(t.get("ValidationState") or "") for t in out.get("TableStatistics", [])]
        for bad in ("Error", "Failed", "Mismatched records", "Not enough collections", "Pending records"):
            if bad in states:
                return bad
        return "Validated" if states else "no tables yet"

    def stop(self, timeout: float = 1800.0) -> bool:
        """Stop the task (CDC ends: the target is authoritative from now on); False when it was not running."""
        task = self._task()
        if task is None or task.get("Status") != "running":
            return False
        self.aws.call("dms", "stop_replication_task", ReplicationTaskArn=task["ReplicationTaskArn"])
        self._wait("replication task", self._task, ("stopped",), timeout)
        return True

    def teardown(self, timeout: float = 1800.0) -> list[str]:
        done: list[str] = []
        task = self._task()
        if task is not None:
            if task.get("Status") == "running":
                self.aws.call("dms", "stop_replication_task", ReplicationTaskArn=task["ReplicationTaskArn"])
                self._wait("replication task", self._task, ("stopped",), timeout)
            self.aws.call("dms", "delete_replication_task", ReplicationTaskArn=task["ReplicationTaskArn"])
            deadline = time.monotonic() + timeout
            while self._task() is not None and time.monotonic() < deadline:
                time.sleep(self.poll_s)
            done.append(f"task {self.names.task}")
        for ident in (self.names.source, self.names.target):
            ep = self._endpoint(ident)
            if ep is not None:
                self.aws.call("dms", "delete_endpoint", EndpointArn=ep["EndpointArn"])
                done.append(f"endpoint {ident}")
        inst = self._instance()
        if inst is not None:
            self.aws.call("dms", "delete_replication_instance", ReplicationInstanceArn=inst["ReplicationInstanceArn"])
            done.append(f"replication instance {self.names.instance}")
        return done
