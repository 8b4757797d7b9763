"""Start the test API server for cross-check tests and write kubeconfigs pointing at it."""
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TLSGEN = os.path.join(HERE, "..", "support", "tlsgen.sh")


class Server:
    def __init__(self, *args, tls=False, token=None, delay=0.1):
        self.dir = tempfile.mkdtemp(prefix="k8s-test-")
        cmd = ["/usr/bin/python3", os.path.join(HERE, "apiserver.py"), "--delay", str(delay)]
        self.tls = tls
        if tls:
            subprocess.run(["bash", TLSGEN, self.dir], check=True)
            cmd += ["--cert", self.path("server.pem"), "--key", self.path("server.key"),
                    "--client-ca", self.path("ca.pem")]
        if token:
            cmd += ["--token", token]
        cmd += list(args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log(), text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError("server did not start: " + open(self.path("server.log")).read())
        self.port = int(line.split()[1])
        self.url = "%s://127.0.0.1:%d" % ("https" if tls else "http", self.port)

    def _log(self):
        self.log = open(self.path("server.log"), "w")
        return self.log

    def path(self, name):
        return os.path.join(self.dir, name)

    def control(self, what, body=None):
        """POST to /_test/ over a plain or TLS connection (controls need no credentials)."""
        import ssl
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.path("ca.pem"))
        req = urllib.request.Request(self.url + "/_test/" + what, data=json.dumps(body or {}).encode(), method="POST")
        with urllib.request.urlopen(req, context=ctx) as r:
            return json.loads(r.read())

    def kubeconfig(self, user=None, name="kubeconfig", namespace="default"):
        cluster = {"server": self.url}
        if self.tls:
            cluster["certificate-authority"] = self.path("ca.pem")
        cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "test",
               "clusters": [{"name": "test", "cluster": cluster}],
               "contexts": [{"name": "test", "context": {"cluster": "test", "user": "u", "namespace": namespace}}],
               "users": [{"name": "u", "user": user or {}}]}
        p = self.path(name)
        with open(p, "w") as f:
            json.dump(cfg, f)
        return p

    def stop(self):
        self.proc.terminate()
        self.proc.stdout.close()
        self.log.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(fn, timeout=10, every=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %ss" % timeout)
        time.sleep(every)


def status_fixture(name):
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "kubernetes", "samples", "status", name)) as f:
        return json.load(f)
