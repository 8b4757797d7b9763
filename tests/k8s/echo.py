#!/usr/bin/python3
"""A TCP echo server for the port-forward spec: answers each line with "echo: " and the line.
Prints "READY <port>"."""
import socketserver
import sys


class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"echo: " + line)
            self.wfile.flush()


srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
srv.daemon_threads = True
print("READY %d" % srv.server_address[1], flush=True)
sys.stdout.flush()
srv.serve_forever()
