"""data-switch against real PostgreSQL servers with logical replication running and an app writing: maintenance
hooks (HTTP flag endpoint served by the test; Deployment scaling through the Kubernetes API test double), the lag
gate, a failed gate rolling back with writes resumed, the ConfigMap switch, and the one-way fence."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from migrate.adapters.postgres import PostgresAdapter
from migrate.config import EnvConfig, KubeSettings, PgEndpoint
from migrate.errors import FenceRefused, StepFailed
from migrate.testing import make_context
from phases._sync import _pgsync
from phases.p2_data.pg_sync import PgSyncStep
from phases.p5_cutover.data_switch import DataSwitch
from tests.kube_double import KubeApiDouble
from tests.test_pg_sync import Writer, assert_identical, env_for, pair, restore, slots  # fixture

NS = "betterprompts"


class AppWriter(Writer):
    """The 'application': writes continuously unless the maintenance flag is on (then it acknowledges idleness)."""

    def __init__(self, src: PostgresAdapter, seed: int = 11) -> None:
        super().__init__(src, seed)
        self.idle = threading.Event()
        self.lock = threading.Lock()

    def retarget(self, db: PostgresAdapter) -> None:
        """The app restarted with its configuration pointed at ``db``."""
        import psycopg

        with self.lock:
            self.conn.close()
            self.conn = psycopg.connect(db.conninfo(), autocommit=True)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.paused.is_set():
                    self.idle.set()
                    time.sleep(0.005)
                    continue
                self.idle.clear()
                with self.lock:
                    self.one()
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc


class MaintenanceEndpoint:
    """The app's feature-flag endpoint: POST /on waits until the app stopped writing; POST /off resumes it."""

    def __init__(self, app: AppWriter) -> None:
        self.calls: list[str] = []
        self.hold_after_off = False  # the app restarts with the new configuration later (the test retargets it)
        self.fail_off = 0  # answer HTTP 503 to the next N /off calls
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.calls.append(self.path)
                if self.path == "/off" and outer.fail_off > 0:
                    outer.fail_off -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "4")
                    self.end_headers()
                    self.wfile.write(b"busy")
                    return
                if self.path == "/on":
                    app.paused.set()
                    app.idle.wait(10)
                elif self.path == "/off" and not outer.hold_after_off:
                    app.paused.clear()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        port = self.server.server_address[1]
        self.settings = {
            "kind": "http",
            "on_url": f"http://127.0.0.1:{port}/on",
            "off_url": f"http://127.0.0.1:{port}/off",
        }

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def streaming(tmp_path: Path, pair: tuple[PostgresAdapter, PostgresAdapter]) -> Iterator[tuple[Any, ...]]:
    src, dst = pair
    env = env_for(src, dst)
    restore(tmp_path, env)
    out = PgSyncStep().apply(make_context(tmp_path, env, "pg-sync"))
    yield src, dst, env, out
    drop_reverse(src, dst)


def drop_reverse(src: PostgresAdapter, dst: PostgresAdapter) -> None:
    """What a test may leave of the reverse stream: a subscription on the source, a slot on the target."""
    from migrate.adapters.pgsync import PgSync

    for (sub,) in src.query(
        "SELECT subname FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = "
        "current_database())"
    ):
        PgSync(dst, src, str(sub)).teardown(timeout=20)


def test_switch_with_http_maintenance_while_the_app_writes(tmp_path: Path, streaming: tuple[Any, ...]) -> None:
    src, dst, env, pg_out = streaming
    with AppWriter(src) as app:
        endpoint = MaintenanceEndpoint(app)
        try:
            while sum(app.ops.values()) < 30:
                time.sleep(0.02)
            ctx = make_context(
                tmp_path, env, "data-switch", settings={"maintenance": endpoint.settings}, upstream={"pg-sync": pg_out}
            )
            plan = DataSwitch().plan(ctx)
            assert plan.changes[0].target == "fence every writer" and "(http" in str(plan.changes[0].detail)
            endpoint.hold_after_off = True
            out = DataSwitch().apply(ctx)
            assert endpoint.calls == ["/on", "/off"]
            # the stream is gone and both sides are identical at the switch point (the app has not restarted yet)
            assert app.paused.is_set() and slots(src) == []
            assert_identical(tmp_path, env)
            # the app restarts pointed at the target and writes there
            app.retarget(dst)
            app.paused.clear()
            n = sum(app.ops.values())
            while sum(app.ops.values()) < n + 5:
                time.sleep(0.02)
        finally:
            endpoint.close()
    assert 0 < out["write_downtime_s"] < 30
    assert ctx.recorded_metrics["write_downtime_s"] == pytest.approx(out["write_downtime_s"], abs=0.01)
    assert set(out["timings"]) >= {"maintenance_on_s", "catchup_s", "validate_s", "detach_and_reverse_s", "maintenance_off_s"}
    assert out["configmap"] is None and out["endpoints"]["pg_dbname"] == dst.dbname  # no cluster: recorded
    # the app now writes to the target; the reverse stream carries those writes back to the source, so a rollback
    # (fence, reverse lag 0, back to the source) loses none of them
    upstream = {"pg-sync": pg_out, "data-switch": out}
    assert out["reverse"]["name"].endswith("_rev")
    checks = {c.name: c for c in DataSwitch().verify(make_context(tmp_path, env, "data-switch", upstream=upstream))}
    assert checks["reverse stream (target -> source) running"].ok and checks["forward stream detached"].ok
    written_on_target = dst.query("SELECT max(id) FROM users")[0][0]
    with AppWriter(dst, seed=3) as late:  # writes on the target, then stops: the rollback fences it
        while sum(late.ops.values()) < 10:
            time.sleep(0.02)
    DataSwitch().rollback(make_context(tmp_path, env, "data-switch", upstream=upstream))
    assert src.query("SELECT max(id) FROM users")[0][0] >= written_on_target
    assert_identical(tmp_path, env)
    assert slots(dst) == [] and slots(src) == []  # the reverse stream is gone with the rollback


def test_failed_gate_rolls_back_with_writes_resumed(tmp_path: Path, streaming: tuple[Any, ...]) -> None:
    src, dst, env, pg_out = streaming
    sync = _pgsync(make_context(tmp_path, env, "pg-sync"))
    dst.execute(f'ALTER SUBSCRIPTION "{sync.subscription}" DISABLE')  # the stream stalls: lag grows
    with AppWriter(src, seed=5) as app:
        endpoint = MaintenanceEndpoint(app)
        try:
            while sum(app.ops.values()) < 10:
                time.sleep(0.02)
            settings = {"maintenance": endpoint.settings, "catchup_timeout_s": 1}
            ctx = make_context(tmp_path, env, "data-switch", settings=settings, upstream={"pg-sync": pg_out})
            with pytest.raises(StepFailed, match="gate failed") as err:
                DataSwitch().apply(ctx)
            assert "writes resumed on the source" in err.value.why
            assert endpoint.calls == ["/on", "/off"] and not app.paused.is_set()
            before = sum(app.ops.values())
            time.sleep(0.3)
            assert sum(app.ops.values()) > before  # the app writes again (to the source)
            assert sync.subscription_info() is not None and slots(src) == [sync.slot]  # stream kept
            lag = sync.lag()
            assert lag.bytes is not None and lag.bytes > 0 and not lag.slot_active  # verify reports it
            checks = {c.name: c for c in PgSyncStep().verify(make_context(tmp_path, env, "pg-sync"))}
            assert not checks["subscription enabled with a running apply worker (target pg_stat_subscription)"].ok
            assert ctx.recorded_metrics.get("gate_failed") == 1.0
            # fixed: the stream catches up and the switch succeeds
            dst.execute(f'ALTER SUBSCRIPTION "{sync.subscription}" ENABLE')
            endpoint.calls.clear()
            endpoint.hold_after_off = True
            ok = DataSwitch().apply(
                make_context(
                    tmp_path,
                    env,
                    "data-switch",
                    settings=settings | {"catchup_timeout_s": 30},
                    upstream={"pg-sync": pg_out},
                )
            )
            assert ok["write_downtime_s"] > 0 and endpoint.calls == ["/on", "/off"]
            assert_identical(tmp_path, env)
        finally:
            endpoint.close()


def test_scale_maintenance_and_configmap_switch_through_kubernetes(
    tmp_path: Path,
    pair: tuple[PostgresAdapter, PostgresAdapter],
) -> None:
    src, dst = pair
    with KubeApiDouble(tmp_path / "kube-double") as kube:
        kube.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        kube.put_object(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "api-gateway", "namespace": NS},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [{"name": "api", "image": "api:1"}]},
                    },
                },
            }
        )
        kube.put_object(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "app-config", "namespace": NS},
                "data": {"DATABASE_HOST": "postgres", "DATABASE_NAME": "betterprompts", "OTHER": "kept"},
            }
        )

        def ep(a: PostgresAdapter) -> PgEndpoint:
            return PgEndpoint(host=a.host, port=a.port, dbname=a.dbname, user=a.user, bin_dir=a.bin_dir)

        env = EnvConfig(
            name="sandbox",
            kind="sandbox",
            postgres={"source": ep(src), "target": ep(dst)},
            kube=KubeSettings(kubeconfig=str(kube.kubeconfig_path), namespace=NS),
        )
        restore(tmp_path, env)
        pg_out = PgSyncStep().apply(make_context(tmp_path, env, "pg-sync"))
        settings = {
            "maintenance": {"kind": "scale", "deployments": ["api-gateway"]},
            "app_config": {
                "configmap": "app-config",
                "data": {"DATABASE_HOST": "${pg_host}", "DATABASE_NAME": "${pg_dbname}"},
            },
        }
        ctx = make_context(tmp_path, env, "data-switch", settings=settings, upstream={"pg-sync": pg_out})
        assert DataSwitch().skip_reason(ctx) is None
        plan = DataSwitch().plan(ctx)
        assert any(c.target == f"ConfigMap {NS}/app-config" for c in plan.changes)
        src.execute("INSERT INTO users (email) VALUES ('late@example.com')")
        out = DataSwitch().apply(ctx)
        intents = [a for a, _ in ctx.recorded_intents]
        assert intents.index("scale-to-zero") < intents.index("set-sequences") < intents.index("patch-configmap")
        assert intents.index("patch-configmap") < intents.index("scale-back")
        dep = kube.get_object("apps/v1", "Deployment", "api-gateway", NS)
        assert dep is not None and dep["spec"]["replicas"] == 3
        cm = kube.get_object("v1", "ConfigMap", "app-config", NS)
        assert cm is not None and cm["data"] == {
            "DATABASE_HOST": dst.host,
            "DATABASE_NAME": dst.dbname,
            "OTHER": "kept",
        }
        assert out["config_previous"] == {"DATABASE_HOST": "postgres", "DATABASE_NAME": "betterprompts"}
        assert dst.query("SELECT count(*) FROM users WHERE email = 'late@example.com'") == [(1,)]
        upstream = {"pg-sync": pg_out, "data-switch": out}
        assert all(
            c.ok
            for c in DataSwitch().verify(
                make_context(tmp_path, env, "data-switch", settings=settings, upstream=upstream)
            )
        )
        # nothing written to the target yet: the switch is still reversible, the ConfigMap goes back
        DataSwitch().rollback(make_context(tmp_path, env, "data-switch", settings=settings, upstream=upstream))
        cm = kube.get_object("v1", "ConfigMap", "app-config", NS)
        assert cm is not None and cm["data"]["DATABASE_NAME"] == "betterprompts" and cm["data"]["OTHER"] == "kept"


def test_skips_without_a_cluster_for_scale_and_without_sync(tmp_path: Path) -> None:
    env = EnvConfig(name="sandbox", kind="sandbox", kube=KubeSettings(kubeconfig="/nonexistent/kubeconfig"))
    scale = make_context(
        tmp_path, env, "data-switch", settings={"maintenance": {"kind": "scale", "deployments": ["x"]}}
    )
    assert "needs a cluster" in str(DataSwitch().skip_reason(scale))
    none = make_context(tmp_path, env, "data-switch")
    assert "no continuous sync" in str(DataSwitch().skip_reason(none))


def test_a_switch_interrupted_after_the_switch_point_converges_on_rerun(
    tmp_path: Path, streaming: tuple[Any, ...]
) -> None:
    src, _dst, env, pg_out = streaming
    with AppWriter(src, seed=9) as app:
        endpoint = MaintenanceEndpoint(app)
        try:
            endpoint.fail_off = 1  # leaving maintenance fails once, after the data was switched
            ctx = make_context(
                tmp_path, env, "data-switch", settings={"maintenance": endpoint.settings}, upstream={"pg-sync": pg_out}
            )
            with pytest.raises(StepFailed, match="maintenance off"):
                DataSwitch().apply(ctx)
            assert app.paused.is_set() and slots(src) == []  # switched, still in maintenance
            assert DataSwitch().plan(ctx).in_place  # the plan knows the switch happened
            endpoint.hold_after_off = True
            out = DataSwitch().apply(ctx)  # re-run: no second switch, only maintenance is lifted
            assert endpoint.calls == ["/on", "/off", "/off"]
            assert out["switched_at"] and out["reverse"]["started"]
            assert out["write_downtime_interrupted"] is True and out["write_downtime_s"] > 0
            assert [a for a, _ in ctx.recorded_intents].count("detach-stream") == 1
            assert_identical(tmp_path, env)
        finally:
            endpoint.close()


@pytest.mark.parametrize("env_name", ["staging", "production"])
def test_a_switch_without_a_fence_on_the_old_stack_is_refused_in_production(tmp_path: Path, env_name: str) -> None:
    from migrate.errors import Blocked

    env = EnvConfig(name=env_name, kind="aws", kube=KubeSettings(kubeconfig="/nonexistent/kubeconfig"))
    upstream = {"pg-sync": {"subscription": "bpm_x", "name": "bpm_x"}}
    # only the new stack's Deployments are fenced: the Compose stack would keep writing to the source
    settings = {"fences": [{"name": "eks", "kind": "scale", "deployments": ["api-gateway"]}]}
    ctx = make_context(tmp_path, env, "data-switch", settings=settings, upstream=upstream)
    with pytest.raises(Blocked) as err:
        DataSwitch().apply(ctx)
    assert err.value.exit_code == 3 and 'kind = "compose"' in err.value.next_cmd
    assert ctx.recorded_intents == []  # refused before touching anything
    blocking = DataSwitch().plan(make_context(tmp_path, env, "data-switch", upstream={})).blocking
    assert blocking and "old stack" in blocking[0].message
