"""``labelloop serve`` and ``labelloop users``: click commands registered by ``labelloop.cli``.

Thin shells: ``serve`` builds :func:`labelloop.web.app.create_app` and runs it on uvicorn;
``users`` calls :mod:`labelloop.web.auth` on the project's store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import ValidationError

__all__ = ["serve", "users", "ensure_admin"]

project_option = click.option(
    "-p", "--project", "project", default=".", envvar="LABELLOOP_PROJECT", show_default=True,
    type=click.Path(file_okay=False, path_type=Path), help="Project folder (env LABELLOOP_PROJECT).")


def ensure_admin(store) -> tuple[str, str | None]:
    """(admin name, its new password): creates user 'admin' (or admin2, ...) with a random
    password when the project has no active admin; (first admin, None) otherwise."""
    from . import auth

    admins = [u for u in auth.list_users(store) if u.role == "admin" and u.active]
    if admins:
        return admins[0].name, None
    taken = {u.name for u in auth.list_users(store)}
    name = next(n for n in ("admin", *(f"admin{i}" for i in range(2, 1000))) if n not in taken)
    user, shown = auth.add_user(store, name, "admin")
    return user.name, shown["password"]


@click.command()
@project_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--strategy", default="auto", show_default=True,
              help="Query strategy ordering the labeling queue (see labelloop.select).")
@click.option("--no-refresh", is_flag=True, help="Do not refresh predictions after labels.")
@click.option("--secure-cookies", is_flag=True, help="Mark cookies Secure (when served behind HTTPS).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True)
def serve(project, host, port, strategy, no_refresh, secure_cookies, log_level):
    """Start the web app (labeling queue, review, audit, dashboard); prints its URL and an admin login."""
    try:
        import uvicorn
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError.for_extra("uvicorn", "web") from None
    from ..store import Store
    from .app import create_app

    with Store(project) as store:
        admin, password = ensure_admin(store)
    app = create_app(project, strategy=strategy, refresh=not no_refresh, secure_cookies=secure_cookies)
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it every
    # response waits ~40 ms for the client's delayed ACK (Nagle)
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValidationError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    real_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(f"labelloop: serving {Path(project).resolve()} at http://{shown_host}:{real_port}/")
    if password:
        click.echo(f"admin login: {admin} / {password}   (shown once; change it with "
                   f"`labelloop users -p {project} passwd {admin}`)")
    else:
        click.echo(f"admin login: {admin} (password set earlier; `labelloop users -p {project} passwd {admin}` "
                   "sets a new one)")
    click.echo("press Ctrl+C to stop")
    # Requests share the GIL with the background refresh (numpy, SQLite inserts): hand it over
    # every 0.25 ms instead of every 5 ms, so a request waits less behind a refresh step
    sys.setswitchinterval(0.00025)
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                            lifespan="on", timeout_graceful_shutdown=30)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the signal after its graceful shutdown
        pass
    click.echo("labelloop: stopped")


@click.group()
@project_option
@click.pass_context
def users(ctx, project):
    """Manage who may log in to the web app (admin, reviewer, annotator)."""
    ctx.obj = {"project": project}


def _store(ctx):
    from ..store import Store

    return Store(ctx.obj["project"])


@users.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["annotator", "reviewer", "admin"]), default="annotator", show_default=True)
@click.option("--token", is_flag=True, help="Give an API token instead of a password.")
@click.pass_context
def users_add(ctx, name, role, token):
    """Add a user; prints the password (or token) once."""
    from . import auth

    with _store(ctx) as store:
        user, shown = auth.add_user(store, name, role, token=token)
    what = "token" if token else "password"
    click.echo(f"added {user.role} {user.name}; {what}: {shown[what]}")
    click.echo("(shown once: it is stored hashed)")


@users.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def users_list(ctx, as_json):
    """List the users."""
    from . import auth

    with _store(ctx) as store:
        rows = [u.to_dict() for u in auth.list_users(store)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for u in rows:
        click.echo(f"{u['name']:<24} {u['role']:<10} {'active' if u['active'] else 'inactive'}")


@users.command("passwd")
@click.argument("name")
@click.pass_context
def users_passwd(ctx, name):
    """Give a user a new random password (printed once); ends their sessions."""
    from . import auth

    with _store(ctx) as store:
        pw = auth.set_password(store, name)
    click.echo(f"new password for {name}: {pw}")


@users.command("token")
@click.argument("name")
@click.pass_context
def users_token(ctx, name):
    """Give a user a new API token (printed once); the old one stops working."""
    from . import auth

    with _store(ctx) as store:
        tok = auth.issue_token(store, name)
    click.echo(f"new token for {name}: {tok}")


@users.command("deactivate")
@click.argument("name")
@click.pass_context
def users_deactivate(ctx, name):
    """Stop a user from logging in (their labels stay)."""
    from . import auth

    with _store(ctx) as store:
        auth.set_active(store, name, False)
    click.echo(f"deactivated {name}")


@users.command("activate")
@click.argument("name")
@click.pass_context
def users_activate(ctx, name):
    """Let a deactivated user log in again."""
    from . import auth

    with _store(ctx) as store:
        auth.set_active(store, name, True)
    click.echo(f"activated {name}")
