"""The admission webhook server: `python -m kiln.webhook`, a process of its own next to the operator.

Admission reviews are answered in this process's event loop, never queued behind the reconcilers'
work, which keeps them fast under load (the API server waits for them on every write).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from kiln import admission

log = logging.getLogger("kiln.webhook")


async def review(request: web.Request) -> web.Response:
    hook = request.match_info["hook"]
    if hook not in admission.HANDLERS:
        return web.json_response({"error": f"no webhook {hook}"}, status=404)
    try:
        body = await request.json()
        req = body["request"]
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "expected an AdmissionReview"}, status=400)
    if hook in admission.CALLS_API:
        response = await asyncio.to_thread(admission.answer, hook, req)
    else:
        response = admission.answer(hook, req)
    if not response["allowed"]:
        log.info(f"{hook}: denied {req.get('operation')} in {req.get('namespace')}: {response['status']['message']}")
    return web.json_response({"apiVersion": body.get("apiVersion", "admission.k8s.io/v1"),
                              "kind": "AdmissionReview", "response": response})


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def exit_with_parent(app: web.Application) -> AsyncIterator[None]:
    """The operator started this process: when it is gone (even killed), so is this one."""
    parent = os.getppid()

    async def watch() -> None:
        while os.getppid() == parent:  # noqa: ASYNC110 - polling the kernel, no event to wait on
            await asyncio.sleep(1)
        log.warning("the operator process is gone: exiting")
        os.kill(os.getpid(), signal.SIGTERM)

    task = asyncio.create_task(watch())
    yield
    task.cancel()


def reload_certificate(ctx: ssl.SSLContext, cert: str, key: str, interval: float = 30.0) -> Callable[
        [web.Application], AsyncIterator[None]]:
    """Load a renewed certificate (cert-manager rotates the mounted Secret): new handshakes use it."""

    async def ctx_(app: web.Application) -> AsyncIterator[None]:
        def stamp() -> tuple[float, float]:
            return os.stat(cert).st_mtime, os.stat(key).st_mtime

        async def watch() -> None:
            seen = stamp()
            while True:
                await asyncio.sleep(interval)
                try:
                    now = stamp()
                    if now != seen:
                        ctx.load_cert_chain(cert, key)
                        seen = now
                        log.info("reloaded the serving certificate")
                except (OSError, ssl.SSLError) as e:  # mid-rotation: try again next round
                    log.warning(f"could not reload the serving certificate yet: {e}")

        task = asyncio.create_task(watch())
        yield
        task.cancel()

    return ctx_


def app() -> web.Application:
    a = web.Application(client_max_size=8 * 1024 * 1024)
    a.router.add_post("/{hook}", review)
    a.router.add_get("/healthz", healthz)
    a.cleanup_ctx.append(exit_with_parent)
    return a


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kiln.webhook", description=__doc__)
    p.add_argument("--addr", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert", required=True, help="PEM certificate (chain)")
    p.add_argument("--key", required=True, help="PEM private key")
    p.add_argument("--reload-interval", type=float, default=30.0,
                   help="seconds between checks for a renewed certificate")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    server = app()
    server.cleanup_ctx.append(reload_certificate(ctx, args.cert, args.key, args.reload_interval))
    web.run_app(server, host=args.addr, port=args.port, ssl_context=ctx, access_log=None,
                print=lambda *_: log.info(f"serving admission reviews on https://{args.addr}:{args.port}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
