"""What the Python test servers beside this file share: TLS that handshakes
in the handler thread, exiting with the process that started them, and
announcing their ports."""

import json
import os
import ssl
import threading
import time


class TLSMixin:
    """Accept in the server loop, handshake in the handler thread, so a
    client that never finishes its handshake cannot stall the others."""

    def __init__(self, address, handler, context):
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request, client_address):
        try:
            conn = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        super().finish_request(conn, client_address)


def tls_context(cert, key, client_ca=None):
    """A server context; with client_ca, client certificates are required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def watch(pid):
    """Exit when process pid is gone (no orphan servers after a crash)."""

    def loop():
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass

    if pid:
        threading.Thread(target=loop, daemon=True).start()


def serve(servers, ready_file, ports):
    """Run every server in a thread, announce the ports, wait forever."""
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(ports))
    os.rename(tmp, ready_file)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
