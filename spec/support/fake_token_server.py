#!/usr/bin/env python3
"""A fake ThousandEyes API v7 token endpoint for the specs and the demo.

It behaves like POST /v7/oauth2/token: reads client credentials from the
form or from HTTP Basic (decoding RFC 6749 2.3.1 form-urlencoding), checks
grant_type, and answers with the 200/400/401/429 bodies and headers the real
endpoint sends.  It serves HTTP and, given a certificate, HTTPS on 127.0.0.1,
counts the connections that carried token requests (to prove keep-alive
reuse), and can be scripted through POST /_control to fail, delay or send
Retry-After.  GET /_stats reports what it saw.  Only the Python standard
library is used, and it exits by itself when the process it watches ends.
"""

import argparse
import base64
import json
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import serverlib

TOKEN_PATH = "/v7/oauth2/token"
DEFAULT_CLIENTS = {"demo-client-id": "demo-client-secret"}
PROBLEM = "application/problem+json"


class State:
    """Everything the specs can script or inspect, behind one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.clients = dict(DEFAULT_CLIENTS)
        self.script = []  # responses to send before behaving normally
        self.delay = 0.0  # seconds to wait before every token answer
        self.expires_in = 3600
        self.token_padding = 0  # characters added to every access token
        self.rate_limit = {"limit": 240, "remaining": 239, "reset": None}
        self.token_requests = 0
        self.token_connections = 0
        self.requests = []  # what each token request carried
        self.issued = {}  # access token -> expiry (time.time())
        self.api_requests = 0
        self.api_unauthorized = 0
        self.api_script = []  # answers to API requests before behaving normally
        self.api_log = []  # method, path, query, body, headers of each API request
        self.scopes = {}  # access token -> the scopes it was issued with
        self.api_scopes = {}  # path prefix -> the scope an API request there needs
        self.api_limit = None  # API requests a minute before 429s (None: no limit)
        self.api_window = (0, 0)  # (minute started at, requests in it)

    def stats(self):
        return {
            "token_requests": self.token_requests,
            "token_connections": self.token_connections,
            "requests": self.requests[-20:],
            "api_requests": self.api_requests,
            "api_unauthorized": self.api_unauthorized,
            "api_log": self.api_log[-20:],
        }


STATE = State()


def rate_limit_headers():
    limit = STATE.rate_limit
    reset = limit["reset"] if limit["reset"] is not None else int(time.time()) + 60
    return {
        "X-Organization-Rate-Limit-Limit": str(limit["limit"]),
        "X-Organization-Rate-Limit-Remaining": str(limit["remaining"]),
        "X-Organization-Rate-Limit-Reset": str(reset),
    }


def problem(status, title, detail, errors=None, type_="about:blank", instance=TOKEN_PATH):
    body = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return status, {"Content-Type": PROBLEM}, json.dumps(body)


def oauth_error(status, code, description):
    body = json.dumps({"error": code, "error_description": description})
    return status, {"Content-Type": "application/json", "WWW-Authenticate": 'Basic realm="te"'}, body


def basic_credentials(value):
    """RFC 6749 2.3.1: base64 of id ':' secret, each form-urlencoded first."""
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except Exception:
        return None
    if ":" not in raw:
        return None
    user, password = raw.split(":", 1)
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-thousandeyes/1"
    # Buffer the response and send it in one piece: headers and body in two
    # segments meet the client's delayed ACK and stall every request ~40 ms.
    wbufsize = -1

    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.counted = False

    def log_message(self, fmt, *args):  # keep test output quiet
        pass

    def send(self, status, headers, body):
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def parse_target(self):
        """Requests through a forward proxy carry an absolute URI: keep its
        path and remember the host it was meant for."""
        if self.path.startswith(("http://", "https://")):
            target = urllib.parse.urlsplit(self.path)
            self.proxied_host = target.netloc
            self.path = target.path or "/"
        else:
            self.proxied_host = None

    def do_GET(self):
        self.parse_target()
        if self.path == "/_stats":
            with STATE.lock:
                body = json.dumps(STATE.stats())
            self.send(200, {"Content-Type": "application/json"}, body)
        elif self.path == "/v7/ping":
            self.send(200, {"Content-Type": "application/json"}, '{"ok":true}')
        elif self.path.startswith("/v7/"):
            self.api(b"")
        else:
            self.send(*problem(404, "Not Found", "no such resource", instance=self.path.partition("?")[0]))

    def do_POST(self):
        self.parse_target()
        body = self.read_body()
        if self.path == "/_control":
            self.control(body)
        elif self.path == TOKEN_PATH:
            self.token(body)
        elif self.path.startswith("/v7/"):
            self.api(body)
        else:
            self.send(*problem(404, "Not Found", "no such resource", instance=self.path.partition("?")[0]))

    def do_other(self):
        self.parse_target()
        body = self.read_body()
        if self.path.startswith("/v7/"):
            self.api(body)
        else:
            self.send(*problem(404, "Not Found", "no such resource", instance=self.path.partition("?")[0]))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_other

    def do_HEAD(self):
        self.parse_target()
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def api(self, body):
        """A protected API resource: a scripted answer if one is queued, else
        200 with a valid bearer token (GET /v7/tests pages through three
        pages of tests; other paths echo the request), else 401."""
        path, _, query = self.path.partition("?")
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        with STATE.lock:
            STATE.api_requests += 1
            STATE.api_log.append({
                "method": self.command, "path": path, "query": query,
                "port": self.server.server_address[1],
                "body": body.decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in self.headers.items()
                            if k.lower() != "authorization"}})
            expiry = STATE.issued.get(token) if scheme.lower() == "bearer" else None
            valid = expiry is not None and expiry > time.time()
            scripted = STATE.api_script.pop(0) if STATE.api_script and valid else None
            if not valid:
                STATE.api_unauthorized += 1
            refusal = self.refusal(path, token) if valid and scripted is None else None
        if scripted is not None:
            if scripted.get("delay"):
                time.sleep(float(scripted["delay"]))
            self.send_scripted(scripted)
        elif not valid:
            self.send(*oauth_error(401, "invalid_token", "Missing, invalid or expired token"))
        elif refusal is not None:
            self.send(*refusal)
        elif self.command == "GET" and path == "/v7/tests":
            self.tests_page(query)
        else:
            self.send(200, {"Content-Type": "application/json", **rate_limit_headers()},
                      json.dumps({"ok": True, "method": self.command, "path": path,
                                  "query": query, "body": body.decode("utf-8", "replace")}))

    def refusal(self, path, token):
        """The API's 429 once the minute's budget is spent (api_limit), or
        its 403 for a token without the scope a path needs (api_scopes).
        Called with STATE.lock held."""
        if STATE.api_limit is not None:
            now = time.time()
            started, count = STATE.api_window
            if now - started >= 60:
                started, count = now, 0
            count += 1
            STATE.api_window = (started, count)
            reset = int(started + 60) + 1
            remaining = max(0, STATE.api_limit - count)
            if count > STATE.api_limit:
                status, headers, text = problem(
                    429, "Too Many Requests", "Organization rate limit exceeded",
                    type_="https://developer.cisco.com/docs/thousandeyes/rate-limits",
                    instance=path)
                headers.update({
                    "X-Organization-Rate-Limit-Limit": str(STATE.api_limit),
                    "X-Organization-Rate-Limit-Remaining": "0",
                    "X-Organization-Rate-Limit-Reset": str(reset),
                })
                return status, headers, text
            STATE.rate_limit.update({"limit": STATE.api_limit, "remaining": remaining,
                                     "reset": reset})
        needed = None
        for prefix, scope in STATE.api_scopes.items():
            if (path == prefix or path.startswith(prefix.rstrip("/") + "/")) and \
                    (needed is None or len(prefix) > len(needed[0])):
                needed = (prefix, scope)
        granted = STATE.scopes.get(token)
        if needed is not None and granted is not None and needed[1] not in granted.split():
            return problem(
                403, "Forbidden",
                "The token's scope (%s) does not include %s, which %s needs"
                % (granted, needed[1], path), instance=path)
        return None

    def tests_page(self, query):
        """Three pages of two tests each, linked as the API links them."""
        page = int((urllib.parse.parse_qs(query).get("cursor") or ["1"])[0])
        # links in the scheme this server speaks, as the real API's are
        scheme = "https" if isinstance(self.server, TLSServer) else "http"
        base = "%s://%s/v7/tests" % (scheme, self.headers.get("Host") or "127.0.0.1")
        tests = [{"testId": str(page * 10 + i), "testName": "test %d-%d" % (page, i)}
                 for i in (1, 2)]
        links = {"self": {"href": "%s?cursor=%d" % (base, page)}}
        if page < 3:
            links["next"] = {"href": "%s?cursor=%d" % (base, page + 1)}
        self.send(200, {"Content-Type": "application/hal+json", **rate_limit_headers()},
                  json.dumps({"tests": tests, "_links": links}))

    def control(self, body):
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        config = json.loads(form.get("config", ["{}"])[0] or "{}")
        with STATE.lock:
            if config.get("reset"):
                STATE.reset()
            if "clients" in config:
                STATE.clients = dict(config["clients"])
            if "script" in config:
                STATE.script = list(config["script"])
            if "api_script" in config:
                STATE.api_script = list(config["api_script"])
            if "delay" in config:
                STATE.delay = float(config["delay"])
            if "expires_in" in config:
                STATE.expires_in = config["expires_in"]
            if config.get("revoke"):
                STATE.issued = {}  # every token issued so far now gets 401
            for token in config.get("api_tokens", []):
                # User API tokens, as made in the dashboard: valid for years
                STATE.issued[token] = time.time() + 10 * 365 * 86400
            if "token_padding" in config:
                STATE.token_padding = int(config["token_padding"])
            if "rate_limit" in config:
                STATE.rate_limit.update(config["rate_limit"])
            if "api_scopes" in config:
                STATE.api_scopes = dict(config["api_scopes"] or {})
            if "api_limit" in config:
                STATE.api_limit = config["api_limit"]
                STATE.api_window = (0, 0)
        self.send(200, {"Content-Type": "application/json"}, '{"ok":true}')

    def token(self, body):
        with STATE.lock:
            STATE.token_requests += 1
            if not self.counted:
                STATE.token_connections += 1
                self.counted = True
            scripted = STATE.script.pop(0) if STATE.script else None
            delay = STATE.delay
        record = {"at": time.time(),
                  "headers": {k.lower(): v for k, v in self.headers.items()},
                  "port": self.server.server_address[1]}
        if self.proxied_host:
            record["proxied_host"] = self.proxied_host
        peer_cert = getattr(self.connection, "getpeercert", lambda: None)()
        if peer_cert:
            record["client_cert"] = dict(x[0] for x in peer_cert.get("subject", ()))
        if delay > 0:
            time.sleep(delay)
        if scripted is not None:
            if scripted.get("delay"):
                time.sleep(float(scripted["delay"]))
            self.record(record)
            self.send_scripted(scripted)
            return
        answer = self.exchange(body, record)
        self.record(record)
        status, headers, text = answer
        headers.update(rate_limit_headers())
        self.send(status, headers, text)

    def record(self, record):
        with STATE.lock:
            STATE.requests.append(record)

    def send_scripted(self, scripted):
        if scripted.get("raw") is not None:
            # bytes as they are (no status line of ours), then hang up
            self.wfile.write(scripted["raw"].encode("latin-1"))
            self.wfile.flush()
            self.close_connection = True
            return
        status = int(scripted.get("status", 503))
        headers = dict(scripted.get("headers", {}))
        if scripted.get("echo_proxy_credentials"):
            # a hostile or careless proxy (or endpoint behind it) that
            # repeats the proxy's credentials, raw and decoded
            raw = self.headers.get("Proxy-Authorization", "")
            try:
                decoded = base64.b64decode(raw.split(" ", 1)[-1]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                decoded = ""
            user, _, password = decoded.partition(":")
            scripted = dict(scripted, body={
                "error": "invalid_request",
                "error_description": "proxy credentials %s, user %s, password %s (%s)"
                % (decoded, user, password, raw)})
        if status == 429 and "body" not in scripted:
            _, ph, text = problem(
                429,
                "Too Many Requests",
                "Organization rate limit exceeded",
                type_="https://developer.cisco.com/docs/thousandeyes/rate-limits",
            )
            headers = {**ph, **rate_limit_headers(), **headers}
        else:
            text = scripted.get("body")
            if text is None:
                text = json.dumps({"error": "server_error", "error_description": "scripted failure"})
            elif not isinstance(text, str):
                text = json.dumps(text)
            headers.setdefault("Content-Type", "application/json")
        self.send(status, headers, text)

    def exchange(self, body, record):
        """Decide the answer to one token request as the real endpoint would."""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            return problem(400, "Bad Request", "Content-Type must be application/x-www-form-urlencoded")
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return problem(400, "Bad Request", "body is not UTF-8")
        form = {k: v[0] for k, v in form.items()}
        record["form"] = form

        authorization = self.headers.get("Authorization") or ""
        scheme, _, value = authorization.partition(" ")
        basic = None
        if scheme.lower() == "basic":
            basic = basic_credentials(value)
            if basic is None:
                return oauth_error(401, "invalid_client", "Malformed Basic credentials")
            record["basic"] = {"client_id": basic[0], "client_secret": basic[1]}
        elif scheme.lower() == "bearer":
            record["bearer"] = value

        grant_type = form.get("grant_type")
        if not grant_type:
            return problem(
                400,
                "Bad Request",
                "Validation failed",
                errors=[{"code": "required", "field": "grant_type", "message": "grant_type is required"}],
            )
        if grant_type != "client_credentials":
            return problem(
                400,
                "Bad Request",
                "Validation failed",
                errors=[{"code": "unsupported_grant_type", "field": "grant_type",
                         "message": "only client_credentials is supported"}],
            )

        if basic is not None and "client_secret" in form:
            return oauth_error(400, "invalid_request", "More than one client authentication method")
        if basic is not None:
            client_id, client_secret = basic
        else:
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if not client_id or STATE.clients.get(client_id) is None or \
                STATE.clients[client_id] != client_secret:
            return oauth_error(401, "invalid_client", "Client authentication failed")

        token = {
            "access_token": "te-" + secrets.token_hex(16) + "A" * STATE.token_padding,
            "token_type": "Bearer",
            "expires_in": STATE.expires_in,
            "scope": form.get("scope", "tests:read"),
        }
        lifetime = token["expires_in"]
        if lifetime is None:
            del token["expires_in"]
            lifetime = 300
        with STATE.lock:
            STATE.issued[token["access_token"]] = time.time() + float(lifetime)
            STATE.scopes[token["access_token"]] = token["scope"]
        return 200, {"Content-Type": "application/json", "Cache-Control": "no-store"}, json.dumps(token)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # the standard library's 5 drops connections of a burst (50 at once
    # through nginx) when the machine is busy, and nginx then waits out
    # SYN retries into a 504: a real server's backlog
    request_queue_size = 128


class TLSServer(serverlib.TLSMixin, Server):
    """The same server, over TLS (serverlib.TLSMixin)."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="HTTP port (0 picks a free one)")
    parser.add_argument("--tls-port", type=int, default=0, help="HTTPS port (0 picks a free one)")
    parser.add_argument("--cert", help="server certificate (PEM); HTTPS only with one")
    parser.add_argument("--key", help="server private key (PEM)")
    parser.add_argument("--mtls-port", type=int, default=0, help="HTTPS port that requires a client certificate")
    parser.add_argument("--client-ca", help="CA (PEM) that signs accepted client certificates; enables the mTLS port")
    parser.add_argument("--ready-file", required=True, help="write the ports here as JSON once listening")
    parser.add_argument("--watch-pid", type=int, help="exit when this process ends")
    args = parser.parse_args()

    servers = [Server(("127.0.0.1", args.port), Handler)]
    ports = {"http": servers[0].server_address[1]}
    if args.cert:
        context = serverlib.tls_context(args.cert, args.key)
        servers.append(TLSServer(("127.0.0.1", args.tls_port), Handler, context))
        ports["https"] = servers[1].server_address[1]
        if args.client_ca:
            mutual = serverlib.tls_context(args.cert, args.key, args.client_ca)
            servers.append(TLSServer(("127.0.0.1", args.mtls_port), Handler, mutual))
            ports["mtls"] = servers[2].server_address[1]
    serverlib.watch(args.watch_pid)
    serverlib.serve(servers, args.ready_file, ports)


if __name__ == "__main__":
    sys.exit(main())
