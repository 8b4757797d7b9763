#!/usr/bin/env python3
"""A relay in front of the real Docker socket, for tests of an engine that goes away.

    docker_proxy.py LISTEN [--upstream /var/run/docker.sock] [--die-after SECONDS] [--mute]

LISTEN is a unix socket path, or 127.0.0.1:PORT. Every connection is relayed byte for byte
to the upstream engine. --die-after exits after that many seconds, dropping every
connection mid-stream (the engine "going away"); --mute accepts connections and never
answers (an engine that hangs). The pid is printed on stdout once listening.
"""
import argparse
import os
import selectors
import socket
import sys
import time


def listener(spec):
    if ":" in spec and not spec.startswith("/"):
        host, port = spec.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
    else:
        if os.path.exists(spec):
            os.unlink(spec)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(spec)
    s.listen(64)
    s.setblocking(False)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen")
    ap.add_argument("--upstream", default="/var/run/docker.sock")
    ap.add_argument("--die-after", type=float, default=None)
    ap.add_argument("--mute", action="store_true")
    args = ap.parse_args()

    srv = listener(args.listen)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    peers = {}
    held = []
    print(os.getpid(), flush=True)
    deadline = time.monotonic() + args.die_after if args.die_after else None

    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if deadline is not None and timeout == 0.0:
            break
        for key, _ in sel.select(timeout):
            if key.data is None:
                conn, _ = srv.accept()
                if args.mute:
                    held.append(conn)
                    continue
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                up.connect(args.upstream)
                peers[conn], peers[up] = up, conn
                sel.register(conn, selectors.EVENT_READ, "c")
                sel.register(up, selectors.EVENT_READ, "u")
                continue
            sock = key.fileobj
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            other = peers.get(sock)
            if not data or other is None:
                for s in (sock, other):
                    if s is not None and s in peers:
                        sel.unregister(s)
                        peers.pop(s, None)
                        s.close()
                continue
            other.sendall(data)
    # Going away: drop everything without a goodbye.
    for s in list(peers) + held:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()
    if not (":" in args.listen and not args.listen.startswith("/")):
        try:
            os.unlink(args.listen)
        except OSError:
            pass
    sys.exit(0)


if __name__ == "__main__":
    main()
