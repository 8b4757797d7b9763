#!/usr/bin/python3
"""kubectl against the test API server: if kubectl disagrees with the server, the server is wrong."""
import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server  # noqa: E402

DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80}]
"""
JOB = """apiVersion: batch/v1
kind: Job
metadata: {name: hello}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox, command: [echo, hello, world]}]
"""


def deploy(name="web"):
    return DEPLOY.replace("NAME", name)


def namespace(name):
    return "apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n" % name


class Kubectl(unittest.TestCase):
    server = None

    @classmethod
    def setUpClass(cls):
        cls.server = Server(tls=True, token="good-token", delay=0.1)
        cls.kc = cls.server.kubeconfig({"token": "good-token"})

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def kubectl(self, *args, stdin=None, check=True, kubeconfig=None):
        env = dict(os.environ, HOME=self.server.dir, KUBECONFIG=kubeconfig or self.kc)
        r = subprocess.run(["kubectl", "--cache-dir", self.server.path("cache")] + list(args), input=stdin,
                           capture_output=True, text=True, env=env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError("kubectl %s failed: %s" % (" ".join(args), r.stderr))
        return r

    def get(self, *args):
        return json.loads(self.kubectl("get", *args, "-o", "json", "--show-managed-fields").stdout)

    def test_apply_scale_conflict_force_rollout_delete(self):
        self.kubectl("apply", "--server-side", "-f", "-", stdin=namespace("k1"))
        out = self.kubectl("apply", "-n", "k1", "--server-side", "-f", "-", stdin=deploy()).stdout
        self.assertIn("deployment.apps/web serverside-applied", out)
        d = self.get("-n", "k1", "deployment", "web")
        self.assertEqual(d["metadata"]["generation"], 1)
        self.assertEqual(d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent")
        apply = [m for m in d["metadata"]["managedFields"] if m["operation"] == "Apply"]
        self.assertEqual(apply[0]["manager"], "kubectl")
        self.kubectl("-n", "k1", "rollout", "status", "deployment/web", "--timeout=20s")
        # Once the controller is done, applying the same thing again changes nothing, not even
        # the resourceVersion.
        rv = self.get("-n", "k1", "deployment", "web")["metadata"]["resourceVersion"]
        self.kubectl("apply", "-n", "k1", "--server-side", "-f", "-", stdin=deploy())
        self.assertEqual(self.get("-n", "k1", "deployment", "web")["metadata"]["resourceVersion"], rv)
        self.kubectl("-n", "k1", "scale", "deployment", "web", "--replicas=3")
        d = self.get("-n", "k1", "deployment", "web")
        self.assertEqual((d["spec"]["replicas"], d["metadata"]["generation"]), (3, 2))
        scale = [m for m in d["metadata"]["managedFields"] if m.get("subresource") == "scale"]
        self.assertEqual(scale[0]["fieldsV1"], {"f:spec": {"f:replicas": {}}})
        r = self.kubectl("apply", "-n", "k1", "--server-side", "-f", "-", stdin=deploy(), check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas', r.stderr)
        self.kubectl("apply", "-n", "k1", "--server-side", "--force-conflicts", "-f", "-", stdin=deploy())
        self.assertEqual(self.get("-n", "k1", "deployment", "web")["spec"]["replicas"], 2)
        self.kubectl("-n", "k1", "scale", "deployment", "web", "--replicas=4", "--current-replicas=2")
        r = self.kubectl("-n", "k1", "scale", "deployment", "web", "--replicas=5", "--current-replicas=2", check=False)
        self.assertIn("Expected replicas to be 2, was 4", r.stderr)
        self.kubectl("-n", "k1", "rollout", "status", "deployment/web", "--timeout=20s")
        d = self.get("-n", "k1", "deployment", "web")
        self.assertEqual(d["status"]["readyReplicas"], 4)
        self.assertEqual(d["status"]["observedGeneration"], d["metadata"]["generation"])
        self.kubectl("-n", "k1", "delete", "deployment", "web", "--wait=true")
        r = self.kubectl("-n", "k1", "get", "deployment", "web", check=False)
        self.assertIn('Error from server (NotFound): deployments.apps "web" not found', r.stderr)

    def test_history_and_undo_through_replicasets(self):
        self.kubectl("apply", "--server-side", "-f", "-", stdin=namespace("k5"))
        for image in ("nginx:1.25", "nginx:1.26"):
            self.kubectl("apply", "-n", "k5", "--server-side", "-f", "-", stdin=deploy().replace("nginx:1.25", image))
            self.kubectl("-n", "k5", "rollout", "status", "deployment/web", "--timeout=20s")
        hist = self.kubectl("-n", "k5", "rollout", "history", "deployment/web").stdout
        self.assertEqual([ln.split()[0] for ln in hist.splitlines()[2:] if ln.strip()], ["1", "2"])
        rs = self.get("-n", "k5", "replicasets")["items"]
        self.assertEqual(sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rs), ["1", "2"])
        for r in rs:
            h = r["metadata"]["labels"]["pod-template-hash"]
            self.assertEqual(r["metadata"]["name"], "web-" + h)
            self.assertEqual(r["spec"]["selector"]["matchLabels"], {"app": "web", "pod-template-hash": h})
            self.assertEqual(r["metadata"]["ownerReferences"][0]["kind"], "Deployment")
        out = self.kubectl("-n", "k5", "rollout", "undo", "deployment/web").stdout
        self.assertIn("deployment.apps/web rolled back", out)
        self.kubectl("-n", "k5", "rollout", "status", "deployment/web", "--timeout=20s")
        d = self.get("-n", "k5", "deployment", "web")
        self.assertEqual(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25")
        self.assertNotIn("pod-template-hash", d["spec"]["template"]["metadata"]["labels"])
        self.assertEqual(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3")
        hist = self.kubectl("-n", "k5", "rollout", "history", "deployment/web").stdout
        self.assertEqual([ln.split()[0] for ln in hist.splitlines()[2:] if ln.strip()], ["2", "3"])
        r = self.kubectl("-n", "k5", "rollout", "undo", "deployment/web", "--to-revision=7", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("unable to find specified revision 7 in history", r.stderr)

    def test_rollout_that_fails(self):
        self.kubectl("apply", "--server-side", "-f", "-", stdin=deploy("broken"))
        self.server.control("fail", {"resource": "deployments", "namespace": "default", "name": "broken"})
        r = self.kubectl("rollout", "status", "deployment/broken", "--timeout=20s", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('deployment "broken" exceeded its progress deadline', r.stderr)

    def test_dry_run_persists_nothing(self):
        out = self.kubectl("create", "--dry-run=server", "-f", "-", stdin=deploy("dry")).stdout
        self.assertIn("deployment.apps/dry created (server dry run)", out)
        r = self.kubectl("get", "deployment", "dry", check=False)
        self.assertIn('deployments.apps "dry" not found', r.stderr)

    def test_already_exists_and_invalid(self):
        cm = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c1"},"data":{"a":"b"}}'
        self.kubectl("create", "-f", "-", stdin=cm)
        r = self.kubectl("create", "-f", "-", stdin=cm, check=False)
        self.assertRegex(r.stderr, r'Error from server \(AlreadyExists\): .*configmaps "c1" already exists')
        svc = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc2"},
                          "spec": {"ports": [{"port": 80, "protocol": "VHF"}]}})
        r = self.kubectl("create", "-f", "-", stdin=svc, check=False)
        self.assertIn('The Service "svc2" is invalid: spec.ports[0].protocol: Unsupported value: "VHF"', r.stderr)
        r = self.kubectl("create", "-f", "-", stdin=svc.replace('"port": 80', '"prot": 80'), check=False)
        self.assertIn('unknown field "spec.ports[0].prot"', r.stderr)

    def test_strategic_patch_and_job_wait(self):
        self.kubectl("apply", "--server-side", "-f", "-", stdin=deploy("patched"))
        self.kubectl("patch", "deployment", "patched", "-p",
                     '{"spec":{"template":{"spec":{"containers":[{"name":"side","image":"busybox"}]}}}}')
        names = [c["name"] for c in self.get("deployment", "patched")["spec"]["template"]["spec"]["containers"]]
        self.assertEqual(names, ["web", "side"])
        self.kubectl("patch", "deployment", "patched", "--type=json", "-p",
                     '[{"op":"remove","path":"/spec/template/spec/containers/1"}]')
        names = [c["name"] for c in self.get("deployment", "patched")["spec"]["template"]["spec"]["containers"]]
        self.assertEqual(names, ["web"])
        self.kubectl("create", "-f", "-", stdin=JOB)
        self.kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=20s")
        pods = self.get("pods", "-l", "job-name=hello")["items"]
        self.assertEqual(len(pods), 1)
        logs = self.kubectl("logs", pods[0]["metadata"]["name"]).stdout
        self.assertEqual(logs, "hello world\n")

    def test_wrong_token_and_client_cert(self):
        bad = self.server.kubeconfig({"token": "wrong"}, name="bad")
        r = self.kubectl("get", "configmaps", kubeconfig=bad, check=False)
        self.assertIn("You must be logged in to the server", r.stderr)
        cert = self.server.kubeconfig({"client-certificate": self.server.path("client.pem"),
                                       "client-key": self.server.path("client.key")}, name="cert")
        self.assertEqual(self.get("namespace", "default")["status"]["phase"], "Active")
        self.kubectl("get", "configmaps", kubeconfig=cert)

    def test_watch_sees_changes(self):
        env = dict(os.environ, HOME=self.server.dir, KUBECONFIG=self.kc)
        w = subprocess.Popen(["kubectl", "--cache-dir", self.server.path("cache"), "get", "configmaps", "-w",
                              "--output-watch-events", "-o", "json", "--request-timeout=20s"],
                             stdout=subprocess.PIPE, text=True, env=env)
        try:
            self.kubectl("create", "-f", "-", stdin='{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"watched"}}')
            seen = []
            while '"name":"watched"' not in "".join(seen):
                seen.append(w.stdout.readline())
            text = "".join(seen)
            self.assertIn('{"type":"ADDED","object":{"apiVersion":"v1","kind":"ConfigMap"', text)
        finally:
            w.terminate()
            w.wait()


if __name__ == "__main__":
    unittest.main(verbosity=2)
