"""A server that answers one connection with a Redis reply, one byte every
0.2 s (a reply that takes seconds, each byte in time), then ends.

    python3 trickle_server.py PORT
"""
import socket
import sys
import time

REPLY = b"$10\r\n0123456789\r\n"


def main():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen(1)
    server.settimeout(20)  # never outlive a spec that did not come
    print("ready", flush=True)
    conn, _ = server.accept()
    conn.settimeout(20)
    conn.recv(4096)
    try:
        for byte in REPLY:
            conn.sendall(bytes([byte]))
            time.sleep(0.2)
    except OSError:
        pass  # the client gave up: what the spec wants
    conn.close()


if __name__ == "__main__":
    main()
