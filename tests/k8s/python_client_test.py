#!/usr/bin/python3
"""The official Python client (Debian python3-kubernetes) against the test API server."""
import json
import os
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, status_fixture, wait_for  # noqa: E402

from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.rest import ApiException  # noqa: E402


def deployment(name, replicas=1):
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels={"app": name}),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": name}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx:1.25")]))))


class PythonClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(tls=True, delay=0.1)
        kc = cls.server.kubeconfig({"client-certificate": cls.server.path("client.pem"),
                                    "client-key": cls.server.path("client.key")})
        cls.api_client = config.new_client_from_config(config_file=kc)
        cls.apps = client.AppsV1Api(cls.api_client)
        cls.core = client.CoreV1Api(cls.api_client)
        cls.batch = client.BatchV1Api(cls.api_client)

    @classmethod
    def tearDownClass(cls):
        cls.api_client.close()
        cls.server.stop()

    def status_of(self, call, *args, **kw):
        with self.assertRaises(ApiException) as cm:
            call(*args, **kw)
        return cm.exception.status, json.loads(cm.exception.body)

    def test_status_bodies_match_the_samples(self):
        code, body = self.status_of(self.apps.read_namespaced_deployment, "web", "default")
        self.assertEqual((code, body), (404, status_fixture("status-404-notfound-deployment.constructed.json")))
        code, body = self.status_of(self.core.read_namespace, "nope")
        self.assertEqual((code, body), (404, status_fixture("status-404-notfound-namespace.constructed.json")))
        # No controller writes to this one, so the stale-version check below is the only writer race.
        self.server.control("fail", {"resource": "deployments", "namespace": "default", "name": "web", "mode": "stall"})
        self.apps.create_namespaced_deployment("default", deployment("web"))
        code, body = self.status_of(self.apps.create_namespaced_deployment, "default", deployment("web"))
        self.assertEqual((code, body), (409, status_fixture("status-409-alreadyexists-deployment.constructed.json")))
        svc = client.V1Service(metadata=client.V1ObjectMeta(name="mock-2"),
                               spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)]))
        self.core.create_namespaced_service("default", svc)
        code, body = self.status_of(self.core.create_namespaced_service, "default", svc)
        self.assertEqual((code, body), (409, status_fixture("status-409-alreadyexists-service.real.json")))
        d = self.apps.read_namespaced_deployment("web", "default")
        stale = d.metadata.resource_version
        d.spec.replicas = 2
        self.apps.replace_namespaced_deployment("web", "default", d)
        d.metadata.resource_version = stale
        code, body = self.status_of(self.apps.replace_namespaced_deployment, "web", "default", d)
        self.assertEqual((code, body), (409, status_fixture("status-409-conflict-stale-resourceversion.constructed.json")))
        bad = client.V1Service(metadata=client.V1ObjectMeta(name="svc2"),
                               spec=client.V1ServiceSpec(cluster_ip="10.0.0.182.1",
                                                         ports=[client.V1ServicePort(port=80, protocol="VHF")]))
        code, body = self.status_of(self.core.create_namespaced_service, "default", bad)
        want = status_fixture("status-422-invalid-service.real.json")
        self.assertEqual(code, 422)
        self.assertEqual(body["details"]["causes"], want["details"]["causes"])
        self.assertEqual(body["message"], want["message"])
        code, body = self.status_of(self.api_client.call_api, "/apis/apps/v1/namespaces/default/deployments/web",
                                    "PATCH", header_params={"Content-Type": "application/apply-patch+yaml"},
                                    body='{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}',
                                    _preload_content=False)
        self.assertEqual((code, body), (422, status_fixture("status-422-apply-missing-fieldmanager.constructed.json")))

    def test_generation_scale_and_status(self):
        d = self.apps.create_namespaced_deployment("default", deployment("gen"))
        self.assertEqual(d.metadata.generation, 1)
        # The controller adds its revision annotation soon after the create; a replace without it
        # changes the annotations, which bumps a Deployment's generation as on a real server. So
        # replace what the controller left.
        d = wait_for(lambda: (lambda x: x if "deployment.kubernetes.io/revision" in (x.metadata.annotations or {})
                              else None)(self.apps.read_namespaced_deployment("gen", "default")))
        self.assertEqual(d.metadata.generation, 1)
        d.metadata.labels["extra"] = "1"
        d.metadata.resource_version = None  # unconditional: the controller may have written status
        d = self.apps.replace_namespaced_deployment("gen", "default", d)
        self.assertEqual(d.metadata.generation, 1, "a label change does not bump generation")
        s = self.apps.patch_namespaced_deployment_scale("gen", "default", {"spec": {"replicas": 3}})
        self.assertEqual((s.kind, s.spec.replicas, s.status.selector), ("Scale", 3, "app=gen"))
        d = wait_for(lambda: (lambda x: x if (x.status.ready_replicas or 0) == 3 else None)(
            self.apps.read_namespaced_deployment("gen", "default")))
        self.assertEqual((d.metadata.generation, d.status.observed_generation), (2, 2))
        code, body = self.status_of(self.apps.patch_namespaced_deployment_scale, "gen", "default",
                                    {"spec": {"replicas": -1}})
        self.assertEqual((code, body["details"]["kind"], body["details"]["causes"][0]["field"]),
                         (422, "Scale", "spec.replicas"))

    def test_list_pagination_selectors_and_watch(self):
        for i in range(5):
            self.core.create_namespaced_config_map("default", client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name="page-%d" % i, labels={"set": "pages", "odd": str(i % 2)}),
                data={"i": str(i)}))
        first = self.core.list_namespaced_config_map("default", label_selector="set=pages", limit=2)
        self.assertEqual(len(first.items), 2)
        self.assertEqual(first.metadata.remaining_item_count, 3)
        names = [c.metadata.name for c in first.items]
        token = first.metadata._continue
        while token:
            page = self.core.list_namespaced_config_map("default", label_selector="set=pages", limit=2, _continue=token)
            names += [c.metadata.name for c in page.items]
            token = page.metadata._continue
        self.assertEqual(names, ["page-%d" % i for i in range(5)])
        odd = self.core.list_namespaced_config_map("default", label_selector="set=pages,odd in (1)")
        self.assertEqual([c.metadata.name for c in odd.items], ["page-1", "page-3"])
        by_name = self.core.list_namespaced_config_map("default", field_selector="metadata.name=page-4")
        self.assertEqual([c.metadata.name for c in by_name.items], ["page-4"])

        rv = first.metadata.resource_version
        events = []
        w = watch.Watch()

        def consume():
            for ev in w.stream(self.core.list_namespaced_config_map, "default", resource_version=rv,
                               label_selector="set=pages", timeout_seconds=10):
                events.append((ev["type"], ev["object"].metadata.name))
                if ev["type"] == "DELETED":
                    w.stop()

        t = threading.Thread(target=consume)
        t.start()
        self.core.patch_namespaced_config_map("page-0", "default", {"data": {"i": "changed"}})
        self.core.delete_namespaced_config_map("page-1", "default")
        t.join(15)
        self.assertEqual(events, [("MODIFIED", "page-0"), ("DELETED", "page-1")])

    def test_job_runs_pods_and_logs(self):
        job = client.V1Job(metadata=client.V1ObjectMeta(name="pj"), spec=client.V1JobSpec(
            completions=2, template=client.V1PodTemplateSpec(spec=client.V1PodSpec(
                restart_policy="Never",
                containers=[client.V1Container(name="c", image="busybox", command=["echo", "done"])]))))
        j = self.batch.create_namespaced_job("default", job)
        self.assertEqual(j.spec.backoff_limit, 6)
        self.assertIn("batch.kubernetes.io/controller-uid", j.spec.selector.match_labels)
        j = wait_for(lambda: (lambda x: x if x.status.succeeded == 2 else None)(
            self.batch.read_namespaced_job("pj", "default")))
        self.assertEqual([c.type for c in j.status.conditions], ["SuccessCriteriaMet", "Complete"])
        pods = self.core.list_namespaced_pod("default", label_selector="job-name=pj").items
        self.assertEqual(len(pods), 2)
        for p in pods:
            self.assertEqual(self.core.read_namespaced_pod_log(p.metadata.name, "default"), "done\n")
            self.assertEqual(p.status.container_statuses[0].state.terminated.exit_code, 0)
        self.batch.delete_namespaced_job("pj", "default", propagation_policy="Background")
        wait_for(lambda: not self.core.list_namespaced_pod("default", label_selector="job-name=pj").items)

    def test_namespace_delete_takes_its_contents(self):
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="gone")))
        ns = self.core.read_namespace("gone")
        self.assertEqual(ns.metadata.labels, {"kubernetes.io/metadata.name": "gone"})
        self.core.create_namespaced_secret("gone", client.V1Secret(metadata=client.V1ObjectMeta(name="s"),
                                                                   string_data={"k": "v"}))
        self.assertEqual(self.core.read_namespaced_secret("s", "gone").data, {"k": "dg=="})
        ns = self.core.delete_namespace("gone")
        wait_for(lambda: "gone" not in [n.metadata.name for n in self.core.list_namespace().items])
        code, _ = self.status_of(self.core.read_namespaced_secret, "s", "gone")
        self.assertEqual(code, 404)

    def test_dry_run(self):
        d = self.apps.create_namespaced_deployment("default", deployment("dry"), dry_run="All")
        self.assertEqual(d.metadata.name, "dry")
        code, _ = self.status_of(self.apps.read_namespaced_deployment, "dry", "default")
        self.assertEqual(code, 404)


if __name__ == "__main__":
    unittest.main(verbosity=2)
