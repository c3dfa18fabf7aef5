"""``hearth serve``, ``hearth worker``, ``hearth web``: the long-running processes."""

from __future__ import annotations

import errno
import socket

import click

from cli.common import hearth_from
from service.core.exceptions import HearthError, InvalidInput
from service.core.logs import configure
from service.core.text import echo


@click.command("serve")
@click.option("--no-web", is_flag=True, help="Do not run the web service in this process.")
@click.pass_context
def serve_cmd(ctx: click.Context, no_web: bool) -> None:
    """Run the daemon: planner, dispatcher and the web service (feeds, webhooks, health)."""
    ctx.exit(_run(ctx, web=False if no_web else None))


@click.command("worker")
@click.pass_context
def worker_cmd(ctx: click.Context) -> None:
    """Run planner and dispatcher only (scale out: several workers share the queue)."""
    ctx.exit(_run(ctx, web=False))


def _run(ctx: click.Context, web: bool | None) -> int:
    from service.runtime.daemon import Daemon

    hearth = hearth_from(ctx)
    configure(hearth.settings.log, phone_region=hearth.settings.defaults.phone_region)
    daemon = Daemon(hearth, web=web)
    if daemon.web_enabled:
        w = hearth.settings.web
        check_bind(w.host, w.port)
        click.echo(f"hearth: web service on http://{w.host}:{w.port} (public {w.public_base_url})")
    elif hearth.settings.daemon.metrics_port:
        d = hearth.settings.daemon
        click.echo(f"hearth: metrics on http://{d.metrics_host}:{d.metrics_port}/metrics")
    click.echo("hearth: running; Ctrl-C or SIGTERM stops after in-flight sends finish")
    return daemon.run()


@click.command("web")
@click.option("--host", help="Bind address (default: web.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: web.port).")
@click.pass_context
def web_cmd(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run only the web service: feeds, Twilio webhooks, unsubscribe, health, metrics."""
    import uvicorn

    from service.db import migrate
    from service.web import create_app

    hearth = hearth_from(ctx)
    configure(hearth.settings.log, phone_region=hearth.settings.defaults.phone_region)
    migrate.require_current(hearth.db)
    w = hearth.settings.web
    host, port = host or w.host, port if port is not None else w.port
    check_bind(host, port)
    uvicorn.run(
        create_app(hearth),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
    )


def check_bind(host: str, port: int) -> None:
    """One line before start, rather than a server that starts and then dies in its log:
    an address that is none of this machine's (exit 2), a port taken or forbidden (exit 1)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        # create_server re-raises a failed name lookup as OSError with gaierror's (negative)
        # errno: EAI_NONAME, EAI_SERVICE...
        if isinstance(exc, socket.gaierror) or (exc.errno or 0) < 0:
            raise InvalidInput(
                "host", f"{echo(host)} is not an address or a known host name"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise InvalidInput("host", f"{echo(host)} is not an address of this machine") from None
        raise HearthError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def register(cli: click.Group) -> None:
    for command in (serve_cmd, worker_cmd, web_cmd):
        cli.add_command(command)
