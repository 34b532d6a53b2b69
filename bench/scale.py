"""``resizeflow bench --scale``: what 1,000 compute hosts cost, simulated on one machine.

Two phases, each printed as a table row by row, as the figures come in:

- **broker**: the cost of per-host queues with idle consumers, on a private
  redis-server and in a RabbitMQ vhost of the bench's own, at several queue
  counts. A few :mod:`bench.idle` worker processes (the product's Celery app)
  consume all the host queues between them; nothing is sent. Over a fixed
  idle window the bench reads the broker's memory and CPU (Redis: ``INFO``;
  RabbitMQ: ``rabbitmqctl``, and the beam process's CPU from ``/proc``).
- **database**: a scratch PostgreSQL database loaded with the rows of
  ``--scale-migrations`` migrations over ``--scale-hosts`` hosts
  (:mod:`bench.scaleload`), then each of beat's periodic passes as beat runs
  it (:mod:`resizeflow.periodic`, :mod:`resizeflow.recovery`), a ``/metrics``
  scrape (:mod:`resizeflow.metrics`) and a fixed-IP allocation (IPAM), timed,
  with ``EXPLAIN (ANALYZE, BUFFERS)`` of every statement each one runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import redis
from celery import Celery
from rich.console import Console
from sqlalchemy import event, text
from sqlalchemy.orm import Session

from bench import monitor, scaleload
from bench.stack import DEFAULT_PG_ADMIN
from resizeflow import metrics, periodic, recovery, routing
from resizeflow.celery_app import make_app
from resizeflow.compute.api import ComputeAPI
from resizeflow.conf import Settings
from resizeflow.db.migrate import upgrade
from resizeflow.db.scratch import create_database, drop_database
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import create_vhost, delete_vhost, start_redis
from resizeflow.devstack.stack import clean_environ
from resizeflow.devstack.supervisor import Supervisor
from resizeflow.openstack.base import PortRequest
from resizeflow.openstack.network import SqlNetwork

DEFAULT_RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
# Auto-confirm's window in the database phase: longer than any resize has
# been awaiting confirmation there, so the pass is its scan alone.
CONFIRM_WINDOW = 3600


@dataclass(frozen=True)
class ScaleConfig:
    hosts: int = 1000
    migrations: int = 100_000
    # Queue counts measured in the broker phase; those above ``hosts`` are dropped.
    queue_points: tuple[int, ...] = (10, 100, 1000)
    consumers: int = 4  # idle worker processes sharing the host queues
    idle_window: float = 10.0
    repeats: int = 5  # runs of each timed pass; the median and the best are reported
    pass_budget_s: float = 10.0  # fewer runs of a pass slower than this
    brokers: tuple[str, ...] = ("redis", "rabbitmq")
    pg_admin_url: str = DEFAULT_PG_ADMIN
    rabbitmq_url: str = DEFAULT_RABBITMQ
    results_dir: Path = Path("bench/results")
    # The schema the database phase runs on: an older revision shows the
    # passes without the indexes added for them.
    schema_revision: str = "head"
    keep: bool = False


class Table:
    """A plain table printed a row at a time, so each figure shows as soon as it exists."""

    def __init__(self, console: Console, title: str, columns: list[tuple[str, int]]) -> None:
        self.console, self.columns = console, columns
        self.rows: list[list[str]] = []
        console.print(f"\n[bold]{title}[/bold]")
        self._line([name for name, _ in columns])
        self._line(["-" * width for _, width in columns])

    def _line(self, cells: list[str]) -> None:
        text = "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, (_, width)) in enumerate(zip(cells, self.columns, strict=True))
        )
        self.console.print(text, markup=False, highlight=False)

    def row(self, *cells: object) -> None:
        out = [
            c if isinstance(c, str) else f"{c:,.1f}" if isinstance(c, float) else f"{c:,}"
            for c in cells
        ]
        self.rows.append(out)
        self._line(out)


# --- broker ----------------------------------------------------------------


@dataclass
class Consumers:
    """A few idle worker processes sharing the host queues, given more queues point by point.

    The processes start once, with the first point's queues; each later point
    hands them the rest through Celery's ``add_consumer`` control command,
    dealt round-robin, so no point pays for (or measures) a restart.
    """

    sup: Supervisor
    settings: Settings
    queues: list[str] = field(default_factory=list)
    procs: list[str] = field(default_factory=list)

    def nodes(self) -> list[str]:
        return [f"{name}@scale" for name in self.procs]

    def grow(self, queues: list[str], processes: int, env: dict[str, str]) -> None:
        """Consume ``queues`` too (starting the processes the first time); wait until they do."""
        new = [q for q in queues if q not in set(self.queues)]
        # An app of its own, closed before the idle window: the bench's broker
        # connections must not count in it.
        app = make_app(self.settings)
        try:
            if not self.procs:
                for k, chunk in enumerate(scaleload.chunks(new, processes)):
                    name = f"idle-{k}"
                    argv = [sys.executable, "-m", "bench.idle", f"{name}@scale", *chunk]
                    self.sup.spawn(name, argv, env)
                    self.procs.append(name)
            else:
                for node, chunk in zip(
                    self.nodes(), scaleload.chunks(new, len(self.procs)), strict=True
                ):
                    for queue in chunk:
                        app.control.add_consumer(queue, destination=[node], reply=False)
            self.queues += new
            deadline = time.monotonic() + 300.0
            while self.consumed(app) < len(self.queues):
                self.sup.check_alive(*self.procs)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"idle consumers took not all {len(self.queues)} queues")
                time.sleep(1.0)
        finally:
            app.close()

    def consumed(self, app: Celery) -> int:
        """How many of the host queues have a consumer, as the workers themselves report."""
        replies = app.control.inspect(timeout=2.0).active_queues() or {}
        wanted = set(self.queues)
        return len({q["name"] for qs in replies.values() for q in qs} & wanted)

    def pids(self) -> list[int]:
        return [self.sup.procs[name].pid for name in self.procs]

    def stop(self) -> None:
        for name in reversed(self.procs):
            self.sup.stop(name, grace=20.0)
        self.procs.clear()


def _rabbitmqctl(*args: str) -> str:
    out = subprocess.run(
        ["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip()


def _rabbit_state(vhost: str) -> dict[str, float]:
    """Queues and their memory in ``vhost``, and the node's total memory."""
    queues = [
        line.split("\t")
        for line in _rabbitmqctl(
            "list_queues", "-p", vhost, "--no-table-headers", "name", "memory", "consumers"
        ).splitlines()
        if line.strip()
    ]
    conns = [
        line
        for line in _rabbitmqctl("list_connections", "--no-table-headers", "vhost").splitlines()
        if line.strip() == vhost
    ]
    return {
        "queues": len(queues),
        "host_queues": sum(1 for q in queues if q[0].startswith("compute.")),
        "consumers": sum(int(q[2]) for q in queues),
        "queue_memory_b": sum(int(q[1]) for q in queues),
        "connections": len(conns),
        "node_memory_b": int(_rabbitmqctl("eval", "erlang:memory(total).")),
    }


def _beam_pid() -> int:
    return int(_rabbitmqctl("eval", "os:getpid().").strip('"'))


def _redis_state(client: redis.Redis[bytes]) -> dict[str, float]:
    mem, cpu, stats, clients = (client.info(s) for s in ("memory", "cpu", "stats", "clients"))
    return {
        "used_memory_b": mem["used_memory"],
        "cpu_s": cpu["used_cpu_sys"] + cpu["used_cpu_user"],
        "commands": stats["total_commands_processed"],
        "clients": clients["connected_clients"],
    }


def broker_phase(
    cfg: ScaleConfig, root: Path, broker: str, console: Console
) -> list[dict[str, Any]]:
    """Idle cost of 0 and then each point's number of host queues on one broker."""
    sup = Supervisor(state_dir=root / broker, env=clean_environ())
    points = [n for n in cfg.queue_points if n <= cfg.hosts] or [cfg.hosts]
    window = cfg.idle_window
    out: list[dict[str, Any]] = []
    vhost = ""
    try:
        if broker == "redis":
            url = start_redis(sup)
            client = redis.Redis(unix_socket_path=url.split("://", 1)[1])
            table = Table(
                console,
                f"broker: Redis (private redis-server), idle {window:.0f} s",
                [
                    ("host queues", 11),
                    ("consumer procs", 14),
                    ("clients", 7),
                    ("used_memory MB", 14),
                    ("+MB vs 0", 8),
                    ("CPU ms/s", 8),
                    ("commands/s", 10),
                    ("consumer RSS MB", 15),
                ],
            )
        else:
            vhost = f"rf-scale-{uuid.uuid4().hex[:8]}"
            url = create_vhost(cfg.rabbitmq_url, vhost)
            beam = _beam_pid()
            table = Table(
                console,
                f"broker: RabbitMQ (vhost {vhost}), idle {window:.0f} s",
                [
                    ("host queues", 11),
                    ("consumer procs", 14),
                    ("queues", 6),
                    ("conns", 5),
                    ("queue mem MB", 12),
                    ("node mem MB", 11),
                    ("+MB vs 0", 8),
                    ("beam CPU ms/s", 13),
                    ("consumer RSS MB", 15),
                ],
            )
        env = {"RESIZEFLOW_BROKER_URL": url, "RESIZEFLOW_LOG_LEVEL": "WARNING"}
        settings = Settings.from_env(env, state_dir=root)
        base: dict[str, float] = {}
        consumers = Consumers(sup, settings)
        for n in [0, *points]:
            if n:
                queues = [routing.queue_for(h) for h in scaleload.host_names(n)]
                consumers.grow(queues, min(cfg.consumers, points[0]), env)
            procs = len(consumers.procs)
            if broker == "redis":
                before = _redis_state(client)
                time.sleep(window)
                after = _redis_state(client)
                row = {
                    "host_queues": n,
                    "consumer_processes": procs,
                    "clients": after["clients"],
                    "used_memory_mb": after["used_memory_b"] / 2**20,
                    "cpu_ms_per_s": 1000 * (after["cpu_s"] - before["cpu_s"]) / window,
                    "commands_per_s": (after["commands"] - before["commands"]) / window,
                }
                base = base or row
                row["memory_added_mb"] = row["used_memory_mb"] - base["used_memory_mb"]
            else:
                state = _rabbit_state(vhost)
                cpu0, t0 = monitor.cpu_seconds([beam]), time.monotonic()
                time.sleep(window)
                cpu1, t1 = monitor.cpu_seconds([beam]), time.monotonic()
                row = {
                    "host_queues": n,
                    "consumer_processes": procs,
                    "vhost_queues": state["queues"],
                    "connections": state["connections"],
                    "consumers": state["consumers"],
                    "queue_memory_mb": state["queue_memory_b"] / 2**20,
                    "node_memory_mb": state["node_memory_b"] / 2**20,
                    "beam_cpu_ms_per_s": 1000 * (cpu1 - cpu0) / (t1 - t0),
                }
                base = base or row
                row["memory_added_mb"] = row["node_memory_mb"] - base["node_memory_mb"]
            rss = sum(monitor.status_kb(p, "VmRSS") for p in consumers.pids()) / 1024
            row["consumer_rss_mb"] = rss
            if broker == "redis":
                table.row(
                    n,
                    procs,
                    int(row["clients"]),
                    row["used_memory_mb"],
                    row["memory_added_mb"],
                    row["cpu_ms_per_s"],
                    row["commands_per_s"],
                    rss,
                )
            else:
                table.row(
                    n,
                    procs,
                    int(row["vhost_queues"]),
                    int(row["connections"]),
                    row["queue_memory_mb"],
                    row["node_memory_mb"],
                    row["memory_added_mb"],
                    row["beam_cpu_ms_per_s"],
                    rss,
                )
            out.append(row)
        consumers.stop()
    finally:
        sup.stop_all(grace=20.0)
        if vhost:
            delete_vhost(vhost)
    return out


# --- database ----------------------------------------------------------------


@contextmanager
def _captured(database: Database) -> Iterator[list[tuple[str, Any]]]:
    """Every SELECT the engine sends while the block runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            seen.append((statement, params))

    event.listen(database.engine, "before_cursor_execute", listen)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", listen)


_SCAN_NODE = re.compile(
    r"(Parallel )?(Seq Scan|Index Only Scan|Index Scan|Bitmap Index Scan|Bitmap Heap Scan)"
    r"( Backward)?( using (\S+))? on (\S+)"
)


def explain(
    database: Database, statement: str, params: Any, setup: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of one statement, and the scans in its plan.

    ``setup`` runs first in the same transaction (planner settings, say).
    """
    raw = database.engine.raw_connection()
    try:
        cur = raw.cursor()
        for sql in setup:
            cur.execute(sql)
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
        plan = [row[0] for row in cur.fetchall()]
        cur.close()
        raw.rollback()
    finally:
        raw.close()
    scans = []
    for line in plan:
        m = _SCAN_NODE.search(line)
        if m:
            kind = m.group(2) + (" Backward" if m.group(3) else "")
            scans.append(f"{kind} {m.group(6)}" + (f" ({m.group(5)})" if m.group(5) else ""))
    took = next((float(x.split()[2]) for x in plan if x.startswith("Execution Time")), 0.0)
    return {"sql": statement, "plan": plan, "scans": scans, "execution_ms": took}


def _timed(fn: Callable[[], Any], repeats: int, budget_s: float) -> tuple[list[float], Any]:
    """Up to ``repeats`` runs, fewer once they have taken ``budget_s``: a slow pass is
    slow in every run, and the bench has minutes, not hours."""
    times: list[float] = []
    result = None
    while not times or (len(times) < repeats and sum(times) < 1000 * budget_s):
        t0 = time.perf_counter()
        result = fn()
        times.append(1000 * (time.perf_counter() - t0))
    return times, result


def _samples(database: Database) -> int:
    collector = metrics.ResizeflowCollector(database)
    return sum(len(family.samples) for family in collector.collect())


def _queue_depths(database: Database, app: Celery) -> int:
    """The one part of a scrape that asks the broker: a depth per host queue."""
    collector = metrics.ResizeflowCollector(database, app)
    return sum(len(family.samples) for family in collector._queues())


def _ipam_once(database: Database, instance: str, fixed_range: str) -> str:
    """Allocate one port as a boot does, then roll it back so every run sees the same table."""
    with Session(database.engine) as s:
        net = SqlNetwork(s, fixed_range)
        had = {v.port_id for v in net.vifs(instance)}
        net.allocate_for_instance(instance, "p", [PortRequest(scaleload.NETWORK_ID)])
        (new,) = [v for v in net.vifs(instance) if v.port_id not in had]
        s.rollback()
    return str(new.ip_address)


_BIG = ("step_journal", "migrations", "instances", "instance_actions", "ports")


def database_phase(cfg: ScaleConfig, root: Path, console: Console) -> dict[str, Any]:
    """Load the rows of ``cfg.migrations`` migrations, then time and explain each pass."""
    sup = Supervisor(state_dir=root / "db", env=clean_environ())
    url = create_database(cfg.pg_admin_url, "rf_scale")
    database = Database(url)
    out: dict[str, Any] = {"schema_revision": cfg.schema_revision}
    try:
        upgrade(database, cfg.schema_revision)
        shape = scaleload.Shape(cfg.hosts, cfg.migrations)
        load = Table(
            console,
            "database: bulk load (COPY, then VACUUM ANALYZE)",
            [("table", 18), ("rows", 10)],
        )
        t0 = time.monotonic()
        counts = scaleload.load(database, shape)
        for table, n in counts.items():
            load.row(table, n)
        out["load"] = {
            "rows": counts,
            "seconds": round(time.monotonic() - t0, 1),
            "in_flight": shape.in_flight,
            "awaiting_confirm": shape.awaiting_confirm,
            "hosts": shape.hosts,
        }
        console.print(
            f"loaded in {out['load']['seconds']} s; {shape.in_flight:,} workflows in "
            f"flight, {shape.awaiting_confirm:,} resizes awaiting confirmation"
        )
        settings = Settings.from_env(
            {
                "RESIZEFLOW_DATABASE_URL": url,
                "RESIZEFLOW_BROKER_URL": start_redis(sup),
                "RESIZEFLOW_RESIZE_CONFIRM_WINDOW": str(CONFIRM_WINDOW),
                "RESIZEFLOW_FIXED_RANGE": scaleload.FIXED_RANGE,
            },
            state_dir=root / "db",
        )
        app = make_app(settings)
        api = ComputeAPI(settings, database, app)
        with database.snapshot() as s:
            instance = str(s.execute(text("SELECT uuid FROM instances LIMIT 1")).scalar_one())

        def auto_confirm() -> str:
            r = periodic.confirm_unconfirmed_resizes(api, CONFIRM_WINDOW)
            return f"{len(r.confirmed)} confirmed, {len(r.skipped) + len(r.errored)} other"

        passes: dict[str, Callable[[], str]] = {
            "auto-confirm": auto_confirm,
            "reconciler": lambda: f"{len(recovery.reconcile(settings, database, app))} re-driven",
            "cleanup": lambda: (
                f"{len(periodic.cleanup_incomplete_migrations(settings, database, app))} purged"
            ),
            "/metrics": lambda: f"{len(metrics.render(database)):,} bytes",
            # The scrape's parts: its queries (and the families built from
            # them), without the text exposition; then the queue depths alone.
            "/metrics: queries": lambda: f"{_samples(database):,} samples",
            "/metrics: queues": lambda: f"{_queue_depths(database, app):,} queues",
            "IPAM: one port": lambda: _ipam_once(database, instance, scaleload.FIXED_RANGE),
        }
        timed = Table(
            console,
            f"database: one pass each, {cfg.repeats} runs (ms)",
            [
                ("pass", 17),
                ("result", 22),
                ("median", 8),
                ("best", 8),
                ("SELECTs", 7),
                ("seq scans of big tables", 32),
            ],
        )
        explains: dict[str, list[dict[str, Any]]] = {}
        out["passes"] = {}
        for name, fn in passes.items():
            # The first run warms connections, caches and statement compilation;
            # it is timed but not counted unless it is the only one.
            with _captured(database) as seen:
                first, result = _timed(fn, 1, 0)
            times = first
            if first[0] < 1000 * cfg.pass_budget_s:
                times, result = _timed(fn, cfg.repeats, cfg.pass_budget_s)
            explains[name] = [explain(database, sql, params) for sql, params in seen]
            seq = sorted(
                {
                    s.split()[-1]
                    for e in explains[name]
                    for s in e["scans"]
                    if s.startswith("Seq Scan") and s.split()[-1] in _BIG
                }
            )
            timed.row(
                name,
                result,
                statistics.median(times),
                min(times),
                len(seen),
                ", ".join(seq) or "none",
            )
            out["passes"][name] = {
                "result": result,
                "median_ms": round(statistics.median(times), 1),
                "best_ms": round(min(times), 1),
                "runs_ms": [round(t, 1) for t in times],
                "selects": len(seen),
                "seq_scanned": seq,
            }
        plans = Table(
            console,
            "database: EXPLAIN (ANALYZE, BUFFERS) of each SELECT",
            [("pass", 17), ("#", 2), ("exec ms", 8), ("scans", 80)],
        )
        for name, items in explains.items():
            for k, e in enumerate(items, 1):
                plans.row(name, str(k), e["execution_ms"], "; ".join(e["scans"]) or "-")
        out["explain"] = explains
        app.close()
    finally:
        database.dispose()
        drop_database(cfg.pg_admin_url, url)
        sup.stop_all(grace=10.0)
    return out


def _rabbitmq_usable(url: str) -> str | None:
    """Why the RabbitMQ phase cannot run here, or None."""
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not installed"
    try:
        _rabbitmqctl("eval", "ok.")
    except (subprocess.SubprocessError, OSError) as exc:
        return f"rabbitmqctl cannot reach the node: {exc}"
    return None


def run_scale(cfg: ScaleConfig, console: Console) -> tuple[dict[str, Any], Path]:
    """Run both phases, print each table as it fills, and save JSON and the plans."""
    from bench.harness import _sigterm_as_interrupt, machine

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    cfg.results_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="resizeflow-scale-"))
    started = time.monotonic()
    results: dict[str, Any] = {"started": stamp, "machine": machine(), "broker": {}}
    try:
        with _sigterm_as_interrupt():
            for broker in cfg.brokers:
                why = _rabbitmq_usable(cfg.rabbitmq_url) if broker == "rabbitmq" else None
                if why:
                    console.print(f"broker: RabbitMQ skipped: {why}")
                    continue
                results["broker"][broker] = broker_phase(cfg, root, broker, console)
            results["database"] = database_phase(cfg, root, console)
    finally:
        if not cfg.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    for secret in ("pg_admin_url", "rabbitmq_url"):
        config.pop(secret)
    results["config"] = config
    path = cfg.results_dir / f"{stamp}-scale.json"
    path.write_text(json.dumps(results, indent=1))
    plans = path.with_name(f"{stamp}-scale-explain.txt")
    with plans.open("w") as fh:
        for name, items in results["database"]["explain"].items():
            for k, e in enumerate(items, 1):
                fh.write(f"== {name} #{k}\n{e['sql']}\n\n" + "\n".join(e["plan"]) + "\n\n")
    console.print(f"\nscale bench: {results['duration_s']} s; results: {path}, plans: {plans}")
    return results, path


def run_cli(hosts: int, migrations: int, pg_admin_url: str, results_dir: Path, keep: bool) -> None:
    """``resizeflow bench --scale``: the sizes from the command line, the rest by default."""
    if min(hosts, migrations) < 1:
        raise click.BadParameter("--scale-hosts and --scale-migrations must be at least 1")
    for name in ("resizeflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Rows of the tables stay on one line when the output is not a terminal.
    console = Console(soft_wrap=True)
    cfg = ScaleConfig(
        hosts=hosts,
        migrations=migrations,
        pg_admin_url=pg_admin_url,
        results_dir=results_dir,
        keep=keep,
    )
    try:
        run_scale(cfg, console)
    except KeyboardInterrupt:
        console.print("interrupted; everything the scale bench started is stopped")
        raise SystemExit(130) from None
