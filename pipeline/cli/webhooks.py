"""``flexpipe webhooks``: run the webhook receiver on its own, and manage the provider's
webhook endpoints (``register``, ``endpoints``, ``unregister``; OpenAI's
``/webhook_endpoints`` through the SDK's ``client.webhooks``).

The receiver runs on aiohttp (the ``emulator`` extra) when it is installed, else on the
standard library's threaded WSGI server.
"""

from __future__ import annotations

import logging

import click

from flexpipe.cli.group import cli, console

log = logging.getLogger("flexpipe.webhooks")


@cli.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=8322, show_default=True, type=int)
@click.option("--loglevel", "-l", default="info", show_default=True)
@click.pass_context
def webhooks(ctx: click.Context, host: str, port: int, loglevel: str) -> None:
    """Run the webhook receiver (POST deliveries to http://HOST:PORT/)."""
    if ctx.invoked_subcommand is not None:
        return
    from flexpipe.config import logs
    from flexpipe.config.settings import get_settings
    from flexpipe.tasks.webhooks import receiver

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(message)s")
    logs.install(get_settings().secrets)
    receiver()  # fail now, not on the first delivery, if there is no secret
    console.print(f"flexpipe webhook receiver on http://{host}:{port}/", highlight=False)
    serve(host, port)


def serve(host: str, port: int) -> None:
    """Serve the receiver until interrupted."""
    try:
        from aiohttp import web
    except ImportError:
        _serve_wsgi(host, port)
        return
    from flexpipe.tasks.webhooks import receiver

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        reply = await receiver().handle_async(body, headers)
        return web.json_response(reply.body, status=reply.status)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/", handle)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


def _serve_wsgi(host: str, port: int) -> None:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from flexpipe.tasks.webhooks import wsgi_app

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    with make_server(host, port, wsgi_app, server_class=Server, handler_class=Quiet) as server:
        server.serve_forever()


@webhooks.command()
@click.argument("url")
@click.option("--name", default="flexpipe", show_default=True)
def register(url: str, name: str) -> None:
    """Register URL with the provider for response.* events; prints the secret once."""
    from flexpipe.client import register_webhook_endpoint
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    made = register_webhook_endpoint(
        settings.api_base_url, settings.api_key.get_secret_value(), url, name=name
    )
    console.print(f"endpoint {made.id}: {made.url} ({', '.join(made.event_types)})")
    console.print("Set this as FLEXPIPE_WEBHOOK_SECRET (it is shown only now):")
    click.echo(made.secret or "(the provider returned no secret)")


@webhooks.command()
def endpoints() -> None:
    """List the provider's webhook endpoints."""
    from flexpipe.client import list_webhook_endpoints
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    found = list_webhook_endpoints(settings.api_base_url, settings.api_key.get_secret_value())
    for endpoint in found:
        console.print(f"{endpoint.id}  {endpoint.url}  {', '.join(endpoint.event_types)}")
    if not found:
        console.print("no webhook endpoints")


@webhooks.command()
@click.argument("endpoint_id")
def unregister(endpoint_id: str) -> None:
    """Delete a webhook endpoint at the provider."""
    from flexpipe.client import delete_webhook_endpoint
    from flexpipe.config.settings import get_settings

    settings = get_settings()
    delete_webhook_endpoint(settings.api_base_url, settings.api_key.get_secret_value(), endpoint_id)
    console.print(f"deleted {endpoint_id}")
