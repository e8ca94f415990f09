"""The one HTTP server of ours, stdlib only and without JAX: the simulator's JSON API (serving/http.py), the
playground (serving/playground.py) and the dataset viewer (`unisim view`) are routes on it, so they share its limits,
its credentials and its TLS.

    server = WebServer([("GET", re.compile(r"/hello"), lambda request: (200, {"hi": request.client}))],
                       credentials=Credentials.load(token_file="tokens.txt", certfile="cert.pem", keyfile="key.pem"))
    server.start(); print(server.url)   # https://127.0.0.1:PORT; server.stop()

A route is (method, regex fullmatched against the path, handler(request: Request, *groups) → (status, payload)); a
payload is a JSON-able value, or (bytes, content type) sent as it is. A handler raises `ServerError(status, message)`
for an answer {"error": message}; any other exception is a bug that costs one request (500, details in the log).

**Limits.** At most `max_connections` connections at once (one more: 503 and closed); a body over
`max_request_bytes` is refused before it is read (413); a connection that sends nothing for `read_timeout_s` is
closed (a request line, headers, a body, an idle keep-alive wait, a TLS handshake).

**Credentials** (`Credentials`): with tokens, every route needs `Authorization: Bearer TOKEN` (or, for a browser
opening a page, `?access_token=TOKEN`: RFC 6750 §2.3), compared in constant time; anything else is answered 401
{"error": "unauthenticated"} before its body is read, and the connection is closed. An authenticated client is named
by its token (quotas key on that name: a client cannot escape its quota by changing a header); without tokens, a
client is its `X-Unisim-Client` header, else its address (`client_identity`). With a certificate and key, the server
speaks HTTPS. `check_exposure` refuses a non-loopback bind without tokens unless told `insecure`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import ssl
import threading
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from unisim.schemas.errors import UserError
from unisim.schemas.options import option

logger = logging.getLogger(__name__)

__all__ = ["AUTH_TOKEN_ENV", "AccessOptions", "CLIENT_TOKEN_CHARS", "CLIENT_TOKEN_KEY", "Credentials", "Request",
           "ServerError", "WebServer", "bearer", "check_exposure", "client_identity", "serve_forever"]


class ServerError(Exception):
    """An HTTP error answer: raised by endpoints on the server and, with the server's message, by the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------- client identity

# The name a client may send to be counted as itself rather than by its address (when the server has no tokens):
# the HTTP header (names are case-insensitive) and the gRPC metadata key (gRPC requires lowercase) are this one.
CLIENT_TOKEN_KEY = "x-unisim-client"
CLIENT_TOKEN_CHARS = 64  # a longer name is cut: it names a client, it is not stored data


def client_identity(token: str | None, address: str) -> str:
    """Who is asking, for per-client quotas on a server without credentials: the name the client sent (its first
    CLIENT_TOKEN_CHARS characters), else its peer address."""
    token = (token or "")[:CLIENT_TOKEN_CHARS]
    return f"token:{token}" if token else f"addr:{address}"


# ----------------------------------------------------------------------------------------------- credentials

AUTH_TOKEN_ENV = "UNISIM_AUTH_TOKEN"  # one token, for the server (when no file is given) and for our clients
MIN_TOKEN_CHARS = 16  # shorter tokens are guessable: refused when loaded


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a server demands and how it encrypts: bearer `tokens` ({token: client name}) and a TLS certificate and
    key (PEM files). Empty tokens: no authentication; no certificate: plain text."""

    tokens: dict = dataclasses.field(default_factory=dict)
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def load(cls, token_file: str | None = None, certfile: str | None = None, keyfile: str | None = None,
             environ=os.environ) -> "Credentials":
        """Tokens from `token_file` (one per line, optionally after a client name: `NAME TOKEN`; blank lines and
        `#` comments skipped), else from $UNISIM_AUTH_TOKEN; the certificate and key by path (both or neither)."""
        if (certfile is None) != (keyfile is None):
            raise UserError("TLS needs both a certificate (--tls_cert) and its key (--tls_key)")
        for path in (certfile, keyfile):
            if path is not None and not os.path.isfile(path):
                raise UserError(f"{path}: no such file")
        tokens = {}
        if token_file is not None:
            try:
                with open(token_file, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except OSError as e:
                raise UserError(f"cannot read the token file: {e}") from None
            for number, line in enumerate(lines, 1):
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                if len(fields) > 2:
                    raise UserError(f"{token_file}:{number}: a line is TOKEN or NAME TOKEN")
                tokens[fields[-1]] = fields[0] if len(fields) == 2 else None
            if not tokens:
                raise UserError(f"{token_file}: no token in it")
        elif environ.get(AUTH_TOKEN_ENV):
            tokens[environ[AUTH_TOKEN_ENV].strip()] = None
        for token in tokens:
            if len(token) < MIN_TOKEN_CHARS:
                raise UserError(f"a token of {len(token)} characters is guessable; use at least {MIN_TOKEN_CHARS} "
                                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        # an unnamed token's client name: a digest, so that quotas and logs never show the token itself
        named = {t: name or "token-" + hashlib.sha256(t.encode()).hexdigest()[:12] for t, name in tokens.items()}
        return cls(named, certfile, keyfile)

    @property
    def required(self) -> bool:
        return bool(self.tokens)

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    def client(self, presented: str | None) -> str | None:
        """The client name of a presented token, or None. Every token is compared, in constant time, whatever
        matched: the answer's timing tells nothing about how much of a token was right."""
        presented = (presented or "").encode()
        found = None
        for token, name in self.tokens.items():
            if hmac.compare_digest(presented, token.encode()):
                found = name
        return found

    def client_of_header(self, authorization: str | None) -> str | None:
        """The client an `Authorization: Bearer TOKEN` value names, or None."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        return self.client(token.strip()) if scheme.lower() == "bearer" else None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (ssl.SSLError, OSError) as e:
            raise UserError(f"cannot load the TLS certificate {self.certfile} and key {self.keyfile}: {e}") from None
        return context


def bearer(token: str | None) -> str | None:
    """The `Authorization` value our clients send: `token`, else $UNISIM_AUTH_TOKEN; None without either."""
    token = token if token is not None else os.environ.get(AUTH_TOKEN_ENV)
    return f"Bearer {token}" if token else None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name, or "" (every address)
        return False


def check_exposure(host: str, credentials: Credentials | None, insecure: bool, what: str = "the server") -> None:
    """Refuses to listen beyond this machine without tokens, unless the user said `insecure` (a proxy guards it)."""
    if not _is_loopback(host) and not (credentials and credentials.required) and not insecure:
        raise UserError(f"{what} would listen on {host or 'every address'} without authentication: give tokens "
                        f"(--auth_token_file, or ${AUTH_TOKEN_ENV}), or say --insecure if something else guards it")


@dataclasses.dataclass(frozen=True)
class AccessOptions:
    """Who may reach a server and how (shared by `unisim serve`, `play` and `view`)."""

    host: str = option("127.0.0.1", "bind address; anything but loopback needs a token (or --insecure)")
    auth_token_file: str | None = option(None, "bearer tokens, one per line (`NAME TOKEN` or `TOKEN`); none: "
                                               f"${AUTH_TOKEN_ENV} if set, else no authentication", metavar="FILE")
    tls_cert: str | None = option(None, "TLS certificate (PEM): HTTPS, and TLS on gRPC (none: plain text)",
                                  metavar="FILE")
    tls_key: str | None = option(None, "the certificate's private key (PEM; none: plain text)", metavar="FILE")
    insecure: bool = option(False, "allow a non-loopback --host without a token (when a proxy authenticates)")

    def credentials(self) -> Credentials:
        credentials = Credentials.load(self.auth_token_file, self.tls_cert, self.tls_key)
        check_exposure(self.host, credentials, self.insecure)
        return credentials


# ------------------------------------------------------------------------------------------------- requests

@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict  # {name: its last value}
    body: object  # parsed JSON, or None without a body
    client: str  # who is asking, for quotas: the authenticated name, else `client_identity`


class WebServer:
    """Serves `routes` over HTTP/1.1 keep-alive (HTTPS with a certificate) on background threads. Binds on
    construction, so `address` and `url` are known before `start()`."""

    def __init__(self, routes, host: str = "127.0.0.1", port: int = 0, *, max_request_bytes: int = 32 << 20,
                 max_connections: int = 256, read_timeout_s: float = 30.0, credentials: Credentials | None = None,
                 insecure: bool = False):
        self.credentials = credentials or Credentials()
        check_exposure(host, self.credentials, insecure)
        self.routes = list(routes)
        self.max_request_bytes, self.read_timeout_s = max_request_bytes, read_timeout_s
        self._threads: list[threading.Thread] = []
        tls = self.credentials.server_context() if self.credentials.tls else None
        self._httpd = _HTTPServer((host, port), _Handler, max_connections, tls)
        self._httpd.app = self

    @property
    def address(self) -> tuple[str, int]:
        return self._httpd.server_address[:2]

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self.credentials.tls else 'http'}://{host}:{port}"

    def start(self):
        thread = threading.Thread(target=self._httpd.serve_forever, name="unisim-http", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        if self._threads:
            self._httpd.shutdown()  # blocks until serve_forever returns: only valid once started
        self._httpd.server_close()
        for thread in self._threads:
            thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def handle(self, request: Request) -> tuple[int, object]:
        matched = [(m, handler, match.groups()) for m, pattern, handler in self.routes
                   if (match := pattern.fullmatch(request.path))]
        if not matched:
            raise ServerError(404, f"no endpoint {request.path[:200]}")
        for m, handler, groups in matched:
            if m == request.method:
                return handler(request, *groups)
        raise ServerError(405, f"{request.path} takes {' or '.join(m for m, _, _ in matched)}, not {request.method}")

    def counted(self, status: int) -> None:
        """Called once per answered request (subclasses count them)."""


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 1024  # the listen backlog: socketserver's 5 resets connections when many clients start at once
    daemon_threads = True

    def __init__(self, address, handler, max_connections: int, tls: ssl.SSLContext | None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)
        self._tls = tls

    def process_request(self, request, client_address):
        """At most `max_connections` connections (one thread each) at once; one more is answered 503 and closed."""
        if not self._slots.acquire(blocking=False):
            if self._tls is None:  # over TLS a plain-text answer would be noise to the client: just close
                body = json.dumps({"error": "too many connections; retry later"}).encode()
                try:
                    request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                    b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                                    + body)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def finish_request(self, request, client_address):
        """The TLS handshake on the connection's own thread (never in the accepting one, which a slow client would
        stall), within the read timeout."""
        if self._tls is None:
            return super().finish_request(request, client_address)
        request.settimeout(self.app.read_timeout_s)
        try:
            secure = self._tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):  # a failed or abandoned handshake: nothing to answer
            return
        try:
            super().finish_request(secure, client_address)
        finally:
            try:
                secure.close()
            except OSError:
                pass

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: an environment thread steps over one connection

    def setup(self):
        # Every read (a request line, headers, a body, an idle keep-alive wait) gives up after the server's
        # read_timeout_s: a half-open or trickling connection holds its thread that long at most.
        self.timeout = self.server.app.read_timeout_s
        super().setup()

    def _serve(self) -> None:
        app: WebServer = self.server.app
        method, parts = self.command, urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        headers = {}
        try:
            client = self._client(app, query)
            request = Request(method, parts.path, query, self._read_json(app), client)
            status, payload = app.handle(request)
        except ServerError as e:
            status, payload = e.status, {"error": str(e)}
            if status == 401:
                headers["WWW-Authenticate"] = "Bearer"
        except Exception:  # a bug must cost one request, not the server; its details go to the log, not the client
            logger.exception("%s %s failed", method, self.path[:200])
            status, payload = 500, {"error": "internal error (see the server's log)"}
        app.counted(status)
        content_type = "application/json"
        if isinstance(payload, tuple):  # (bytes, content type): a page or an image
            data, content_type = payload
        else:
            data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    # PUT and PATCH too: answered 405 in JSON rather than http.server's HTML 501
    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    def _client(self, app: WebServer, query: dict) -> str:
        """Who is asking: the authenticated client (or 401, before the body is read), else `client_identity`."""
        if not app.credentials.required:
            return client_identity(self.headers.get(CLIENT_TOKEN_KEY), self.client_address[0])
        name = app.credentials.client_of_header(self.headers.get("Authorization"))
        if name is None and "access_token" in query:
            name = app.credentials.client(query["access_token"])
        if name is None:
            self.close_connection = True  # its body stays unread
            raise ServerError(401, "unauthenticated")
        return f"auth:{name}"

    def _read_json(self, app: WebServer):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ServerError(411, "send a Content-Length; chunked bodies are not accepted")
        length = self.headers.get("Content-Length")
        if length is None:
            return None
        if not (length.isascii() and length.isdigit()):  # "²" and "١٢" are digits to str.isdigit, not to int()
            self.close_connection = True  # the body's end is unknown: the connection cannot be reused
            raise ServerError(400, f"bad Content-Length {length!r}")
        if int(length) > app.max_request_bytes:
            self.close_connection = True  # the body stays unread
            raise ServerError(413, f"request body of {length} bytes exceeds max_request_bytes {app.max_request_bytes}")
        raw = self.rfile.read(int(length))
        if len(raw) < int(length):  # the client stopped (or timed out) before its body ended: never executed
            self.close_connection = True
            raise ServerError(400, f"the body ended after {len(raw)} of {length} bytes")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ServerError(400, f"malformed JSON: {e}") from None

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (a request line too long, a malformed request) as JSON, like every other."""
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        data = json.dumps({"error": message or phrase}).encode()
        self.close_connection = True
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        if isinstance(code, int) and code >= 500:  # failures only: a step per environment per second is noise
            super().log_request(code, size)

    def log_error(self, format, *args):
        if not format.startswith("Request timed out"):  # an idle keep-alive connection closing is normal
            super().log_error(format, *args)


def serve_forever(server, also=()) -> None:
    """Blocks until Ctrl-C or SIGTERM, then stops `server`. The handlers are installed explicitly: a process
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python then raises no
    KeyboardInterrupt. `also`: other started front ends to stop with it."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.default_int_handler)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        for other in also:  # other front ends on the same pool (dm_env_rpc)
            other.stop()
        server.stop()
