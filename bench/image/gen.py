#!/usr/bin/env python3
"""A saved image (docker-archive) for the image benchmark: LAYERS layers of FILES files each,
about SIZE_MB in all, with files overwritten and deleted by later layers (whiteouts) so the
analysis does real work. manifest.json is written last, as `docker save` does.

usage: gen.py OUT.tar [SIZE_MB=1024] [LAYERS=20] [FILES=500]"""
import hashlib
import io
import json
import os
import sys
import tarfile

out = sys.argv[1]
size_mb = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
layers = int(sys.argv[3]) if len(sys.argv) > 3 else 20
files = int(sys.argv[4]) if len(sys.argv) > 4 else 500
per_file = size_mb * 1024 * 1024 // (layers * files)
blob = os.urandom(per_file)


class Repeat(io.RawIOBase):
    """per_file bytes of data without holding more than one copy."""

    def __init__(self, n):
        self.left = n

    def readinto(self, b):
        n = min(len(b), self.left, len(blob))
        b[:n] = blob[:n]
        self.left -= n
        return n


def layer_tar(i, path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo(f"srv/l{i}")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        t.addfile(d)
        for j in range(files):
            name = f"srv/l{i}/f{j:05d}.bin"
            if i > 0 and j % 10 == 0:
                name = f"srv/l{i - 1}/f{j:05d}.bin"  # overwrites a file of the layer below
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = per_file, 0o644
            t.addfile(ti, Repeat(per_file))
        if i > 0:
            for j in range(1, files, 50):  # deletes a few files of the layer below
                wh = tarfile.TarInfo(f"srv/l{i - 1}/.wh.f{j:05d}.bin")
                t.addfile(wh)


work = out + ".d"
os.makedirs(work, exist_ok=True)
names, diff_ids = [], []
with tarfile.open(out, "w") as outer:
    for i in range(layers):
        p = f"{work}/layer{i}.tar"
        layer_tar(i, p)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        name = f"{h.hexdigest()}/layer.tar"
        outer.add(p, arcname=name)
        os.remove(p)
        names.append(name)
        diff_ids.append("sha256:" + h.hexdigest())
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": diff_ids},
                         "history": [{"created_by": f"COPY l{i} /srv/l{i} # buildkit"} for i in range(layers)]}).encode()
    cname = hashlib.sha256(config).hexdigest() + ".json"
    for name, data in ((cname, config),
                       ("manifest.json", json.dumps([{"Config": cname, "RepoTags": ["bench:1"], "Layers": names}]).encode())):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        outer.addfile(ti, io.BytesIO(data))
os.rmdir(work)
