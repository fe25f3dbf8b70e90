#!/usr/bin/env python3
"""A token endpoint that misbehaves on purpose, for the hardening specs.

The request path picks the fault: POST /<mode>/... .  Plain TCP listens on
one port; TLS listeners with an expired, a wrong-host and a self-signed
certificate on others; a "target" listener records every connection and
request it gets (redirects point there, and it must see nothing).  Only the
Python standard library is used; it exits when the watched process ends.
"""

import argparse
import email.utils
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
import time

import serverlib

LOCK = threading.Lock()
COUNTS = {}  # per flaky key: how many requests it has seen
TARGET = {"connections": 0, "requests": []}
ARGS = None


def response(status, reason, headers, body):
    if isinstance(body, str):
        body = body.encode()
    head = ["HTTP/1.1 %d %s" % (status, reason)]
    for name, value in headers:
        head.append("%s: %s" % (name, value))
    if not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers):
        head.append("Content-Length: %d" % len(body))
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_response(status, reason, value, extra=()):
    body = value if isinstance(value, str) else json.dumps(value)
    return response(status, reason, [("Content-Type", "application/json")] + list(extra), body)


def problem(status, reason, value, extra=()):
    body = value if isinstance(value, str) else json.dumps(value)
    return response(status, reason, [("Content-Type", "application/problem+json")] + list(extra), body)


def read_request(rfile):
    """Read one request head and body; (method, path, headers, body) or None."""
    line = rfile.readline(65536)
    if not line:
        return None
    method, path, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        line = rfile.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    body = rfile.read(length) if length else b""
    return method, path, headers, body


def stall(conn):
    """Hold the connection until the client gives up (or 60 s pass)."""
    conn.settimeout(60)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass


def big_body(size):
    return b"{" + b" " * (size - 2) + b"}"


def fault(mode, path, headers, conn, wfile):
    """Answer one request according to mode; False to close the connection."""
    token = {"access_token": "fault-token-0123456789", "token_type": "Bearer", "expires_in": 3600}
    if mode == "ok":
        wfile.write(json_response(200, "OK", token))
    elif mode == "silent":
        stall(conn)
        return False
    elif mode == "stall-after-headers":
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        wfile.flush()
        stall(conn)
        return False
    elif mode == "many-headers":
        # 30,000 small fields: reading them must not cost time after the
        # transfer (libcurl's header walk is quadratic)
        # (180 KB: under libcurl's own 300 KB cap on a head)
        head = b"x: 1\r\n" * 30000
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + head
                    + b"Content-Length: 2\r\n\r\n{}")
        return False
    elif mode == "fields-250":
        # 250 small fields (1.5 KB): past the count of fields a head may
        # have, far under its bytes
        head = b"x: 1\r\n" * 250
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + head
                    + b"Content-Length: 2\r\n\r\n{}")
        return False
    elif mode == "repeated-header":
        # one field 3,000 times (each joined to the last: quadratic bytes)
        head = b"X-Organization-Rate-Limit-Limit: 240\r\n" * 3000
        wfile.write(b"HTTP/1.1 429 Too Many Requests\r\n" + head
                    + b"Content-Length: 2\r\n\r\n{}")
        return False
    elif mode == "http09":
        wfile.write(b"no status line at all\r\n\r\n")
        return False
    elif mode == "status-1000":
        wfile.write(b"HTTP/1.1 1000 Odd\r\nContent-Length: 0\r\n\r\n")
        return False
    elif mode == "http-version-1-7":
        wfile.write(b"HTTP/1.7 200 OK\r\nContent-Length: 0\r\n\r\n")
        return False
    elif mode == "close-mid-headers":
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Ty")
        return False
    elif mode == "close-mid-body":
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                    b'{"access_')
        return False
    elif mode == "huge-body":
        wfile.write(response(200, "OK", [("Content-Type", "application/json")], big_body(4 << 20)))
    elif mode == "huge-length-then-silence":
        # a length past the limit, and no body: refused on the length alone
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 4194304\r\n\r\n")
        wfile.flush()
        stall(conn)
        return False
    elif mode == "huge-body-no-length":
        wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        for _ in range(64):
            wfile.write(b" " * 65536)
        return False
    elif mode == "header-forms":
        # an informational head first, then a repeated field, padding
        # around values, an empty value, and a trailer after a chunked body
        wfile.write(b"HTTP/1.1 103 Early Hints\r\nX-Organization-Rate-Limit-Limit: 1\r\n\r\n"
                    b"HTTP/1.1 429 Too Many Requests\r\n"
                    b"Content-Type: application/json\r\n"
                    b"X-Organization-Rate-Limit-Limit:  240 \r\n"
                    b"x-organization-rate-limit-limit:\t300\r\n"
                    b"X-Organization-Rate-Limit-Reset:\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    b"2\r\n{}\r\n0\r\nX-Organization-Rate-Limit-Remaining: 9\r\n\r\n")
    elif mode == "invalid-json":
        wfile.write(json_response(200, "OK", "{this is not json"))
    elif mode == "truncated-json":
        wfile.write(json_response(200, "OK", '{"access_token": "abc'))
    elif mode == "json-array":
        wfile.write(json_response(200, "OK", "[1, 2, 3]"))
    elif mode == "no-access-token":
        wfile.write(json_response(200, "OK", {"token_type": "Bearer", "expires_in": 3600}))
    elif mode == "access-token-number":
        wfile.write(json_response(200, "OK", {"access_token": 12345, "expires_in": 3600}))
    elif mode.startswith("expires-in-"):
        value = {"string": "3600", "negative": -5, "zero": 0, "huge": 1e300,
                 "fraction": 0.25}[mode[len("expires-in-"):]]
        wfile.write(json_response(200, "OK", dict(token, expires_in=value)))
    elif mode == "error-in-200":
        wfile.write(json_response(200, "OK", {"error": "invalid_client",
                                              "error_description": "hidden failure"}))
    elif mode == "problem-odd-types":
        wfile.write(problem(400, "Bad Request", {"type": 42, "title": ["x"], "detail": {"a": 1},
                                                 "errors": "not a list"}))
    elif mode == "problem-odd-errors":
        wfile.write(problem(400, "Bad Request", {"title": "Bad Request",
                                                 "errors": [1, "two", {"code": 3, "field": "f"}]}))
    elif mode == "problem-not-json":
        wfile.write(problem(400, "Bad Request", "<html>bad request</html>"))
    elif mode.startswith("redirect-"):
        status = int(mode[len("redirect-"):])
        location = "http://127.0.0.1:%d/v7/oauth2/token" % ARGS.target_port
        wfile.write(response(status, "Redirect", [("Location", location)], ""))
    elif mode == "retry-after-seconds":
        wfile.write(problem(429, "Too Many Requests", {"title": "Too Many Requests"},
                            [("Retry-After", "2")]))
    elif mode == "retry-after-date":
        when = email.utils.formatdate(time.time() + 3, usegmt=True)
        wfile.write(problem(429, "Too Many Requests", {"title": "Too Many Requests"},
                            [("Retry-After", when)]))
    elif mode == "retry-after-huge":
        wfile.write(problem(429, "Too Many Requests", {"title": "Too Many Requests"},
                            [("Retry-After", "999999999")]))
    elif mode == "reset-infinite":
        wfile.write(problem(429, "Too Many Requests", {"title": "Too Many Requests"},
                            [("X-Organization-Rate-Limit-Reset", "1e400")]))
    elif mode.startswith("token-"):
        # an access_token or token_type that must not be trusted
        bad = {"token-crlf": {"access_token": "abc\r\nX-Injected: 1"},
               "token-nul": {"access_token": "abc\u0000def"},
               "token-escape": {"access_token": "abc\u001b[31mdef"},
               "token-space": {"access_token": "abc def"},
               "token-long": {"access_token": "a" * 20000},
               "token-type-mac": {"token_type": "mac"},
               "token-type-number": {"token_type": 7},
               "token-type-lower": {"token_type": "bearer"}}[mode]
        wfile.write(json_response(200, "OK", dict(token, **bad)))
    elif mode == "description-control":
        wfile.write(json_response(401, "Unauthorized", {
            "error": "invalid_client\u001b[2J",
            "error_description": "bad\r\nFAKE LOG LINE\u001b]0;title\u0007 client"}))
    elif mode == "description-long":
        wfile.write(problem(400, "Bad Request", {"title": "T" * 100000, "detail": "D" * 100000,
                                                 "errors": [{"field": "f", "message": "m"}] * 1000}))
    elif mode == "echo-basic":
        # a server that quotes the Authorization header back in its error
        wfile.write(json_response(401, "Unauthorized", {
            "error": "invalid_client",
            "error_description": "rejected " + headers.get("authorization", "")}))
    elif mode == "flaky":
        # /flaky/<key>: 503 twice, then a token
        key = path.split("/")[2] if path.count("/") >= 2 else ""
        with LOCK:
            COUNTS[key] = COUNTS.get(key, 0) + 1
            seen = COUNTS[key]
        if seen <= 2:
            wfile.write(json_response(503, "Service Unavailable", {"error": "temporarily_unavailable"}))
        else:
            wfile.write(json_response(200, "OK", token))
    else:
        wfile.write(json_response(404, "Not Found", {"error": "no such fault: " + mode}))
    return True


class FaultHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            try:
                request = read_request(self.rfile)
            except (OSError, ValueError):
                return
            if request is None:
                return
            _, path, headers, _ = request
            mode = path.strip("/").split("/")[0]
            keep = fault(mode, path, headers, self.connection, self.wfile)
            try:
                self.wfile.flush()
            except OSError:
                return
            if not keep:
                return


class TargetHandler(socketserver.StreamRequestHandler):
    """Where redirects point: records what it sees, answers 200."""

    def handle(self):
        with LOCK:
            TARGET["connections"] += 1
        request = read_request(self.rfile)
        if request is None:
            return
        method, path, headers, body = request
        with LOCK:
            TARGET["requests"].append({"method": method, "path": path, "headers": headers,
                                       "body": body.decode("latin-1")})
        if path == "/_seen":
            with LOCK:
                seen = json.dumps(TARGET)
            self.wfile.write(json_response(200, "OK", seen))
        else:
            self.wfile.write(json_response(200, "OK", {"access_token": "target", "expires_in": 60}))


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class TLSServer(serverlib.TLSMixin, Server):
    """The same server, over TLS (serverlib.TLSMixin)."""


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", required=True, help="directory with the fault certificates")
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--watch-pid", type=int)
    ARGS = parser.parse_args()

    target = Server(("127.0.0.1", 0), TargetHandler)
    ARGS.target_port = target.server_address[1]
    servers = {"http": Server(("127.0.0.1", 0), FaultHandler), "target": target}
    for name in ("expired", "wrong-host", "self-signed"):
        context = serverlib.tls_context(os.path.join(ARGS.certs, name + ".pem"),
                                        os.path.join(ARGS.certs, name + ".key"))
        servers[name] = TLSServer(("127.0.0.1", 0), FaultHandler, context)
    # TLS 1.1 at most, with a certificate the test CA signed: a client must
    # refuse it however its TLS library is configured
    old_tls = serverlib.tls_context(os.path.join(ARGS.certs, "server.pem"),
                                    os.path.join(ARGS.certs, "server.key"))
    old_tls.set_ciphers("ALL:@SECLEVEL=0")
    old_tls.minimum_version = ssl.TLSVersion.TLSv1
    old_tls.maximum_version = ssl.TLSVersion.TLSv1_1
    servers["tls11"] = TLSServer(("127.0.0.1", 0), FaultHandler, old_tls)
    # a port that refuses: bound, then closed again
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    ports = {name: server.server_address[1] for name, server in servers.items()}
    ports["refused"] = closed.getsockname()[1]
    closed.close()

    serverlib.watch(ARGS.watch_pid)
    serverlib.serve(servers.values(), ARGS.ready_file, ports)


if __name__ == "__main__":
    sys.exit(main())
