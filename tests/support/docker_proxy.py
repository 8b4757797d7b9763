#!/usr/bin/env python3
"""A relay in front of the real Docker socket, for tests of addresses, TLS and an engine that
goes away.

    docker_proxy.py LISTEN [--upstream /var/run/docker.sock] [--die-after SECONDS] [--mute]
                    [--cut-save-after BYTES] [--builder-version V]
                    [--tls-cert PEM --tls-key KEY [--tls-client-ca PEM]]

LISTEN is a unix socket path, or 127.0.0.1:PORT. Every connection is relayed byte for byte
to the upstream engine, two threads per connection; one side ending its direction is
relayed as a half-close. --die-after exits after that many
seconds, dropping every connection mid-stream (the engine "going away"); --mute accepts
connections and never answers (an engine that hangs); --cut-save-after drops a connection
once that many bytes of an image save reply (`GET /images/.../get`) have been relayed (a save
stream broken part-way, independent of timing); --builder-version adds "Builder-Version: V" to every reply head (an
engine announcing its default builder, as Docker 23+ does in /_ping); --tls-* serve TLS on a TCP port,
requiring a client certificate signed by --tls-client-ca when given (as dockerd --tlsverify).
The pid is printed on stdout once listening.
"""
import argparse
import os
import socket
import ssl
import sys
import threading
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
    return s


def pump(src, dst, cut=None, upstream=True, builder=None):
    """Relay src to dst. `cut` (per connection, shared by its two pumps) is set with
    --cut-save-after: the client-to-engine pump marks a save request in it, and the
    engine-to-client pump stops once the save reply has used up its byte budget."""
    eof = False
    try:
        while True:
            data = src.recv(65536)
            if not data:
                eof = True
                break
            if cut is not None and upstream:
                # Requests go one at a time on a connection: is this one an image save?
                line = data.split(b"\r\n", 1)[0]
                cut["saving"] = line.startswith(b"GET ") and b"/images/" in line and b"/get" in line
            elif cut is not None and cut["saving"]:
                room = cut["budget"] - cut["sent"]
                if len(data) >= room:
                    dst.sendall(data[:room])
                    break
                cut["sent"] += len(data)
            if builder is not None and not upstream and data.startswith(b"HTTP/1.1 "):
                # dockerd writes a reply head in one piece; every head carries Api-Version.
                data = data.replace(b"\r\nApi-Version: ", b"\r\nBuilder-Version: " + builder + b"\r\nApi-Version: ", 1)
            dst.sendall(data)
    except OSError:
        pass
    if eof:
        # A clean end of one direction is relayed as such (a hijacked attach closes its
        # stdin this way and still reads the output); the other pump ends the rest.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve(conn, args, ctx, held):
    if ctx is not None:
        try:
            conn = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
    if args.mute:
        held.append(conn)
        return
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    up.connect(args.upstream)
    cut = None
    if args.cut_save_after is not None:
        cut = {"budget": args.cut_save_after, "saving": False, "sent": 0}
    threading.Thread(target=pump, args=(conn, up, cut, True), daemon=True).start()
    builder = args.builder_version.encode() if args.builder_version else None
    threading.Thread(target=pump, args=(up, conn, cut, False, builder), daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("listen")
    ap.add_argument("--upstream", default="/var/run/docker.sock")
    ap.add_argument("--die-after", type=float, default=None)
    ap.add_argument("--mute", action="store_true")
    ap.add_argument("--cut-save-after", type=int, default=None)
    ap.add_argument("--builder-version")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca")
    args = ap.parse_args()

    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.tls_client_ca)

    srv = listener(args.listen)
    held = []
    print(os.getpid(), flush=True)

    def accept_loop():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn, args, ctx, held), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    if args.die_after is None:
        while True:
            time.sleep(3600)
    time.sleep(args.die_after)
    # Going away: the process ends and the kernel drops every connection without a goodbye.
    if args.listen.startswith("/"):
        try:
            os.unlink(args.listen)
        except OSError:
            pass
    os._exit(0)


if __name__ == "__main__":
    main()
