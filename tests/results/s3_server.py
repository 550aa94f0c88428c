"""An S3-API server on 127.0.0.1 for the tests: moto's S3 in server mode, and a faulty proxy.

`MotoServer` serves moto's WSGI app from a thread (werkzeug, bound to port 0, so no port race;
unlike moto's ThreadedMotoServer, every wait here is bounded). Moto checks neither signatures
nor the expiry of presigned URLs, which real stores do; `PresignCheck` in front of it checks
both for presigned requests with SigV4 as S3 does, so a test of a link's expiry is meaningful.
All servers in one process share moto's state: a bucket made through one is seen through all.

`FaultyProxy` is an aiohttp reverse proxy in front of moto that answers 500 InternalError to
every attempt at one part number of a multipart upload, or that stops: the store failing, or
going away, mid-upload.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

import aiohttp
from aiohttp import web
from werkzeug.serving import BaseWSGIServer, make_server

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-not-secret"
REGION = "us-east-1"
BUCKET = "results"
STOP_WAIT = 10.0


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    bucket: str = BUCKET
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY


class PresignCheck:
    """WSGI middleware: a request signed in its query string must be unexpired and well signed.

    It also drops the `server` and `status` headers moto adds beside werkzeug's own Server:
    a duplicate Server header is refused by aiohttp's strict parser (python -X dev).
    """

    def __init__(self, app, secret_key: str) -> None:
        self._app = app
        self._secret = secret_key

    def __call__(self, environ, start_response):
        query = environ.get("QUERY_STRING", "")
        if "X-Amz-Signature=" in query:
            problem = self._problem(environ, query)
            if problem is not None:
                code, message = problem
                body = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        f"<Message>{message}</Message></Error>").encode()
                start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                                 ("Content-Length", str(len(body)))])
                return [body]

        def respond(status, headers, *rest):
            kept = [(k, v) for k, v in headers if k not in ("server", "status")]
            return start_response(status, kept, *rest)

        return self._app(environ, respond)

    def _problem(self, environ, query: str) -> tuple[str, str] | None:
        pairs = parse_qsl(query, keep_blank_values=True)
        params = dict(pairs)
        try:
            signed_at = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
            expires = int(params["X-Amz-Expires"])
            credential = params["X-Amz-Credential"]
            signature = params["X-Amz-Signature"]
        except (KeyError, ValueError):
            return "AuthorizationQueryParametersError", "Missing or malformed parameters."
        age = (datetime.now(UTC).replace(tzinfo=None) - signed_at).total_seconds()
        if age > expires:
            return "AccessDenied", "Request has expired"
        _, date, region, service, _ = credential.split("/", 4)
        path = environ.get("REQUEST_URI", environ.get("RAW_URI", "/")).split("?", 1)[0]
        canonical_query = "&".join(
            f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
            for k, v in sorted(pairs) if k != "X-Amz-Signature"
        )
        headers = params["X-Amz-SignedHeaders"].split(";")
        canonical_headers = "".join(
            f"{h}:{environ['HTTP_' + h.upper().replace('-', '_')].strip()}\n" for h in headers
        )
        canonical = "\n".join([environ["REQUEST_METHOD"], path, canonical_query,
                               canonical_headers, ";".join(headers), "UNSIGNED-PAYLOAD"])
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", params["X-Amz-Date"], scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self._secret).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "SignatureDoesNotMatch", "The request signature does not match."
        return None


class MotoServer:
    """moto's S3 over HTTP on 127.0.0.1, on a port the OS picks."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication, MotoRequestHandler, create_backend_app)

        app = PresignCheck(DomainDispatcherApplication(create_backend_app),
                           SECRET_KEY)
        # make_server binds and listens here, in this thread: requests queue up from now on.
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; each wait bounded by STOP_WAIT."""
        stopper = threading.Thread(target=self._server.shutdown, daemon=True)
        stopper.start()
        stopper.join(STOP_WAIT)
        self._thread.join(STOP_WAIT)
        self._server.server_close()
        if self._thread.is_alive():
            raise RuntimeError(f"the S3 server at {self.url} did not stop in {STOP_WAIT} s")


def make_bucket(url: str, bucket: str = BUCKET) -> None:
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=5, retries={"max_attempts": 1})
    client = boto3.client("s3", endpoint_url=url, region_name=REGION, config=config,
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=bucket)


class FaultyProxy:
    """Forwards to `upstream`, but answers 500 to every upload of part `fail_part` (if any).

    `stop()` closes the listener and every connection: to the client, the store went away.
    """

    def __init__(self, upstream: str, fail_part: int | None = None, fail_times: int | None = None) -> None:
        """`fail_times`: only the first so many attempts at the part fail (None: every one)."""
        self._upstream = upstream
        self._fail_part = str(fail_part)
        self._fail_times = fail_times
        self.failed = 0  # how many attempts at the part were refused
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        query = request.rel_url.query
        if (request.method == "PUT" and "uploadId" in query
                and query.get("partNumber") == self._fail_part
                and (self._fail_times is None or self.failed < self._fail_times)):
            self.failed += 1
            return web.Response(
                status=500, content_type="application/xml",
                text="<Error><Code>InternalError</Code><Message>We encountered an internal "
                     "error. Please try again.</Message></Error>")
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        assert self._session is not None
        async with self._session.request(request.method, self._upstream + str(request.rel_url),
                                         headers=headers, data=io.BytesIO(body)) as answer:
            payload = await answer.read()
            out = {k: v for k, v in answer.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding", "connection",
                                        "content-encoding")}
            return web.Response(status=answer.status, body=payload, headers=out)
