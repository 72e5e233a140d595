"""Push a tiny image straight over the registry's HTTP API (no engine needed): a config blob,
one layer, a v2 manifest. Returns the manifest's digest, as `docker push` would print it."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import requests


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push(server: str, auth: tuple[str, str], ca: str, repository: str, tag: str,
         content: str) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("version")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [_digest(raw.getvalue())]},
                         "config": {}}).encode()
    base = f"https://{server}/v2/{repository}"
    for blob in (layer, config):
        start = requests.post(f"{base}/blobs/uploads/", auth=auth, verify=ca, timeout=10)
        assert start.status_code == 202, start.text
        location = start.headers["Location"]
        if location.startswith("/"):
            location = f"https://{server}{location}"
        sep = "&" if "?" in location else "?"
        done = requests.put(f"{location}{sep}digest={_digest(blob)}", data=blob, auth=auth,
                            verify=ca, timeout=10,
                            headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": _digest(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer), "digest": _digest(layer)}],
    }).encode()
    put = requests.put(f"{base}/manifests/{tag}", data=manifest, auth=auth, verify=ca,
                       timeout=10, headers={"Content-Type":
                                            "application/vnd.docker.distribution.manifest.v2+json"})
    assert put.status_code == 201, put.text
    return _digest(manifest)
