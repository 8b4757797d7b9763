#!/usr/bin/env python3
"""A misbehaving HTTP server for the transport's fault tests, on loopback only.

It speaks HTTP by hand on raw sockets so that it can break the protocol at the byte level.
The request path picks the fault (see FAULTS). Two more ports speak TLS badly: one answers
the ClientHello with garbage, one never answers it; a fourth serves HTTPS with an expired
certificate signed by a CA written to DIR/ca.pem.

Usage: faults.py DIR
Prints "READY <http> <tls-garbage> <tls-silent> <tls-expired>" (ports) once listening.
"""
import datetime
import ipaddress
import os
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def read_request(sock):
    """The request head; the path, or None when the client went away."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return None
        data += chunk
        if len(data) > 1 << 20:
            return None
    return data.split(b" ", 2)[1].decode()


def reset(sock):
    """Close with RST instead of FIN (SO_LINGER with a zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def sleep_or_gone(sock, seconds):
    """Sleep, returning False early when the client closed the connection."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except socket.timeout:
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(None)


def head(sock, extra=b""):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n" + extra + b"\r\n")


def reset_mid_body(sock):
    head(sock, b"Content-Length: 1000000\r\n")
    sock.sendall(b"x" * 50000)
    time.sleep(0.2)
    reset(sock)


def truncated_chunked(sock):
    head(sock, b"Transfer-Encoding: chunked\r\n")
    sock.sendall(b"5\r\nhello\r\n1000\r\nonly part of the chunk")
    time.sleep(0.2)
    sock.close()


def bad_chunk_size(sock):
    head(sock, b"Transfer-Encoding: chunked\r\n")
    sock.sendall(b"5\r\nhello\r\nzz-not-hex\r\nxx\r\n0\r\n\r\n")
    time.sleep(0.5)
    sock.close()


def huge_header(sock):
    """One header line of 8 MiB, sent as fast as the client takes it."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: ")
    try:
        for _ in range(128):
            sock.sendall(b"a" * 65536)
        sock.sendall(b"\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass


def many_headers(sock):
    """Headers without end: 64-byte lines until the client gives up."""
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Many: " + b"b" * 54 + b"\r\n"
    try:
        for _ in range(1 << 20):
            sock.sendall(line * 64)
    except OSError:
        pass


def slow_headers(sock):
    """One header byte a second, forever."""
    for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 100000:
        try:
            sock.sendall(bytes([b]))
        except OSError:
            return
        if not sleep_or_gone(sock, 1):
            return


def slow_body(sock):
    """A body that never ends, one byte every two seconds."""
    head(sock, b"Content-Length: 1000000\r\n")
    while True:
        try:
            sock.sendall(b"z")
        except OSError:
            return
        if not sleep_or_gone(sock, 2):
            return


def endless_body(sock):
    """A chunked body that never ends, as fast as the client reads."""
    head(sock, b"Transfer-Encoding: chunked\r\n")
    chunk = b"%x\r\n" % 65536 + b"e" * 65536 + b"\r\n"
    try:
        for _ in range(1 << 16):  # 4 GiB at most
            sock.sendall(chunk)
    except OSError:
        pass


def short_length(sock):
    """Content-Length says 10, 40 bytes follow: the rest must not be taken as a response."""
    head(sock, b"Content-Length: 10\r\n")
    sock.sendall(b"0123456789" + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforge")
    sleep_or_gone(sock, 2)
    sock.close()


def long_length_close(sock):
    """Content-Length says 1000, 10 bytes follow, then the connection closes."""
    head(sock, b"Content-Length: 1000\r\n")
    sock.sendall(b"0123456789")
    time.sleep(0.2)
    sock.close()


def long_length_stall(sock):
    """Content-Length says 1000, 10 bytes follow, then nothing, connection kept open."""
    head(sock, b"Content-Length: 1000\r\n")
    sock.sendall(b"0123456789")
    while sleep_or_gone(sock, 1):
        pass


def ok(sock):
    head(sock, b"Content-Length: 2\r\n")
    sock.sendall(b"ok")


FAULTS = {
    "/reset-mid-body": reset_mid_body,
    "/truncated-chunked": truncated_chunked,
    "/bad-chunk-size": bad_chunk_size,
    "/huge-header": huge_header,
    "/many-headers": many_headers,
    "/slow-headers": slow_headers,
    "/slow-body": slow_body,
    "/endless-body": endless_body,
    "/short-length": short_length,
    "/long-length-close": long_length_close,
    "/long-length-stall": long_length_stall,
    "/ok": ok,
}


class FaultHandler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        while True:
            path = read_request(sock)
            if path is None:
                return
            fault = FAULTS.get(path.split("?")[0])
            if fault is None:
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            fault(sock)
            if fault is not ok:
                return


class GarbageTLSHandler(socketserver.BaseRequestHandler):
    """Reads the ClientHello, then answers garbage or keeps silent (the server's mode)."""

    def handle(self):
        sock = self.request
        try:
            sock.recv(4096)
            if self.server.mode == "garbage":
                sock.sendall(os.urandom(3000))
                time.sleep(0.5)
            else:
                while sleep_or_gone(sock, 1):
                    pass
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def expired_pki(directory):
    """A CA and a server certificate for 127.0.0.1 that expired yesterday."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "myrmex faults CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=10))
          .not_valid_after(now + datetime.timedelta(days=10))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=5))
            .not_valid_after(now - datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(os.path.join(directory, "expired.pem"), "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.path.join(directory, "expired.key"), "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


class ExpiredHandler(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            with self.server.ctx.wrap_socket(self.request, server_side=True) as tls:
                if read_request(tls) is not None:
                    ok(tls)
        except (ssl.SSLError, OSError):
            pass  # the client refused the certificate, as it should


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)
    expired_pki(directory)
    http = Server(("127.0.0.1", 0), FaultHandler)
    garbage = Server(("127.0.0.1", 0), GarbageTLSHandler)
    garbage.mode = "garbage"
    silent = Server(("127.0.0.1", 0), GarbageTLSHandler)
    silent.mode = "silent"
    expired = Server(("127.0.0.1", 0), ExpiredHandler)
    expired.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    expired.ctx.load_cert_chain(os.path.join(directory, "expired.pem"),
                                os.path.join(directory, "expired.key"))
    ports = [serve(s) for s in (http, garbage, silent, expired)]
    print("READY", *ports, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
