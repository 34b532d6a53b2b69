"""``resizeflow bench``: throughput, latency and scaling against a bare-Celery baseline.

The command is a plugin of the ``resizeflow`` CLI (entry point group
``resizeflow.commands``), so the product never imports the bench.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console


def _ints(raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {raw!r}") from None
    if not values or min(values) < 1:
        raise click.BadParameter("expected positive integers")
    return values


@click.command()
@click.option(
    "-n", "--workflows", "n", default=200, show_default=True, help="Workflows per throughput batch."
)
@click.option("--hosts", default=2, show_default=True, help="Hosts of the main stack.")
@click.option(
    "--latency-samples",
    default=30,
    show_default=True,
    help="Single workflows per flow in the latency phase.",
)
@click.option("--host-grid", default="1,2,4,8", show_default=True, help="Scaling: hosts.")
@click.option(
    "--host-grid-n",
    default=100,
    show_default=True,
    help="Scaling: workflows per point of the host sweep.",
)
@click.option(
    "--load-grid",
    default="100,500",
    show_default=True,
    help="Scaling: workflows per point of the load sweep (on --hosts hosts).",
)
@click.option(
    "--full",
    is_flag=True,
    help="The whole grid: every H in 1,2,4,8 with every N in 100,500,2000.",
)
@click.option(
    "--db-workflows",
    default=20,
    show_default=True,
    help="Workflows per flow counted in the database phase.",
)
@click.option("--concurrency", default=4, show_default=True, help="Worker threads per host.")
@click.option("--no-profile", is_flag=True, help="Skip the py-spy pass.")
@click.option(
    "--pg-admin-url",
    envvar="RESIZEFLOW_BENCH_POSTGRES",
    default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
    show_default=True,
    help="A PostgreSQL database to create the bench databases from.",
)
@click.option(
    "--results-dir",
    type=click.Path(path_type=Path),
    default=Path("bench/results"),
    show_default=True,
)
@click.option("--keep", is_flag=True, help="Keep the temporary state dir (worker logs).")
@click.option(
    "--hypervisor",
    type=click.Choice(["test", "qemu"]),
    default="test",
    show_default=True,
    help="qemu: real resizes of a guest with --vm-data-mib of data between two hosts "
    "over SSH, split into copy, shutdown, boot and engine time, beside rsync (root).",
)
@click.option(
    "--vm-data-mib",
    default=1024,
    show_default=True,
    help="With --hypervisor qemu: MiB of random data on the guest's disk.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="The same ratios at small sizes, one round each, without the profile, the "
    "database counts and the scaling grid: "
    "under 3 minutes on 2 cores. Size options given with it still apply.",
)
@click.option("--no-peer", is_flag=True, help="Skip the TaskFlow peer.")
@click.option(
    "--peer-workflows",
    "peer_n",
    default=50,
    show_default=True,
    help="TaskFlow peer: workflows at once, per engine and flow.",
)
@click.option(
    "--peer-samples",
    default=10,
    show_default=True,
    help="TaskFlow peer: single workflows per flow.",
)
@click.option(
    "--scale", is_flag=True, help="Only the scale phases: broker idle cost, beat's scans, /metrics."
)
@click.option("--scale-hosts", default=1000, show_default=True, help="Scale: simulated hosts.")
@click.option(
    "--scale-migrations", default=100_000, show_default=True, help="Scale: migrations loaded."
)
@click.pass_context
def bench(
    click_ctx: click.Context,
    n: int,
    hosts: int,
    latency_samples: int,
    host_grid: str,
    host_grid_n: int,
    load_grid: str,
    full: bool,
    db_workflows: int,
    concurrency: int,
    no_profile: bool,
    pg_admin_url: str,
    results_dir: Path,
    keep: bool,
    hypervisor: str,
    vm_data_mib: int,
    quick: bool,
    no_peer: bool,
    peer_n: int,
    peer_samples: int,
    scale: bool,
    scale_hosts: int,
    scale_migrations: int,
) -> None:
    """Benchmark workflows against bare Celery chains; print the table, save JSON and a PNG."""
    if scale:
        from bench.scale import run_cli

        run_cli(scale_hosts, scale_migrations, pg_admin_url, results_dir, keep)
        return
    if hypervisor == "qemu":
        from bench.vm import run_vm_bench

        if vm_data_mib < 4:
            raise click.BadParameter("at least 4 MiB", param_hint="--vm-data-mib")
        for name in ("resizeflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        run_vm_bench(
            Console(width=max(Console().width, 120)),
            pg_admin_url=pg_admin_url,
            results_dir=results_dir,
            data_mib=vm_data_mib,
            keep=keep,
        )
        return
    from bench import harness, plot, report

    if min(n, hosts, latency_samples, db_workflows, concurrency, peer_n, peer_samples) < 1:
        raise click.BadParameter("sizes must be at least 1")
    chosen: dict[str, Any] = {
        "n": n,
        "hosts": hosts,
        "latency_samples": latency_samples,
        "host_grid": _ints(host_grid),
        "host_grid_n": host_grid_n,
        "load_grid": harness.FULL_LOAD_GRID if full else _ints(load_grid),
        "cross": full,
        "db_n": db_workflows,
        "concurrency": concurrency,
        "profile": not no_profile,
        "peer": not no_peer,
        "peer_n": peer_n,
        "peer_samples": peer_samples,
        "pg_admin_url": pg_admin_url,
        "results_dir": results_dir,
        "keep": keep,
    }
    if quick:
        # Sizes given on the command line override the quick ones; where the
        # run goes and what it connects to always come from the options.
        source = click.core.ParameterSource.COMMANDLINE
        keys = {
            "db_workflows": ("db_n",),
            "no_profile": ("profile",),
            "no_peer": ("peer",),
            "full": ("load_grid", "cross"),
        }
        given = {
            key
            for name in click_ctx.params
            if click_ctx.get_parameter_source(name) == source
            for key in keys.get(name, (name,))
        } | {"pg_admin_url", "results_dir", "keep"}
        config = harness.BenchConfig.quick(**{k: v for k, v in chosen.items() if k in given})
    else:
        config = harness.BenchConfig(**chosen)
    # The service layer logs every request at INFO, TaskFlow its consumers; the
    # tables are what matter here.
    for name in ("resizeflow", "alembic", "taskflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    console = Console()
    t0 = time.monotonic()

    def log(msg: str) -> None:
        console.log(f"[{time.monotonic() - t0:5.0f}s] {msg}")

    def show(phase: str, results: dict[str, Any]) -> None:
        report.print_phase(console, phase, results)

    try:
        results, path = harness.run_bench(config, log, show)
    except KeyboardInterrupt:
        console.print("interrupted; the bench stack is stopped and its databases dropped")
        raise SystemExit(130) from None
    report.print_summary(console, results)
    png = plot.plot_scaling(results, path.with_suffix(".png"))
    console.print(f"results: {path}" + (f", plot: {png}" if png else ""))
