"""A server that answers one connection with a Redis reply, one byte at a
time (a reply that takes seconds, each byte in time for a per-read
timeout), then ends.

    python3 trickle_server.py PORT          a bulk reply, a byte every 0.2 s
    python3 trickle_server.py PORT auth     +OK to the first command (AUTH),
                                            a byte every 0.45 s; then it
                                            says whether a second came
"""
import socket
import sys
import time

REPLY = b"$10\r\n0123456789\r\n"


def main():
    auth = len(sys.argv) > 2 and sys.argv[2] == "auth"
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen(1)
    server.settimeout(20)  # never outlive a spec that did not come
    print("ready", flush=True)
    conn, _ = server.accept()
    conn.settimeout(20)
    conn.recv(4096)
    reply, pause = (b"+OK\r\n", 0.45) if auth else (REPLY, 0.2)
    try:
        for byte in reply:
            conn.sendall(bytes([byte]))
            time.sleep(pause)
        if auth:
            conn.settimeout(3)
            try:
                second = conn.recv(4096)
            except socket.timeout:
                second = b""
            print("second command" if second else "no second command", flush=True)
    except OSError:
        print("no second command (the client gave up)", flush=True)
    conn.close()


if __name__ == "__main__":
    main()
