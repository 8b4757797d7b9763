# create + start + wait + remove N busybox containers sequentially with python3-docker.
# Usage: run100.py IMAGE [N]
import sys
import docker
image = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
client = docker.from_env()
for _ in range(n):
    c = client.containers.create(image, ["true"], network_mode="none")
    c.start()
    assert c.wait()["StatusCode"] == 0
    c.remove()
