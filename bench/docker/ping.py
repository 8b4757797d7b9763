# Process start, client from the environment, one ping (Debian python3-docker).
import docker
assert docker.from_env().ping()
