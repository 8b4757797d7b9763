# N sequential container listings with python3-docker's low-level API (the same single
# GET /containers/json?all=1 per call; the high-level containers.list() would also inspect
# every container).
import sys
import docker
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
api = docker.from_env().api
for _ in range(n):
    count = len(api.containers(all=True))
print(count)
