"""The image registry, asked over its HTTP API (Distribution's v2) from where the tool runs:
does each image of a release exist, and what digest does its tag name right now.

Resolving before anything changes on the host is what lets a deploy stop with "nothing
changed" on a missing tag or a refused login, and pin `repo:tag@sha256:...` so a rollback
runs exactly the bits that ran before even after the tag was re-pushed. Both the basic and
the bearer-token challenge are answered (Distribution with htpasswd asks basic; hosted
registries hand out tokens). The password goes only into the Authorization header.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from vedfin_ops.errors import CheckFailed

MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
])
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(CheckFailed):
    """The registry said no (exit 1): refused login, missing tag, or not reachable."""


@dataclass(frozen=True)
class ImageRef:
    server: str
    repository: str
    tag: str

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        """`127.0.0.1:5000/vedfin/api:v2` -> server, repository, tag. The first path part
        is a server only when it looks like one (a dot, a colon, or `localhost`)."""
        name = ref.split("@", 1)[0]
        head, sep, tag = name.rpartition(":")
        if not sep or "/" in tag:
            head, tag = name, "latest"
        first, slash, rest = head.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            return cls(first, rest, tag)
        return cls("", head, tag)

    def __str__(self) -> str:
        return f"{self.server + '/' if self.server else ''}{self.repository}:{self.tag}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {realm, service, ...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE.findall(rest))


class Registry:
    """One registry server with one login; `digest()` per image."""

    def __init__(self, server: str, username: str, password: str, *,
                 ca: str | None = None, timeout: float = 10.0) -> None:
        self.server, self.username = server, username
        self._password = password
        self.verify: str | bool = ca or True
        self.timeout = timeout
        self._token: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the server asked for basic auth: sent at once from then on
        self._session: Any = None  # one connection kept alive: one TLS handshake per run

    def _url(self, path: str) -> str:
        return f"https://{self.server}{path}"

    def _request(self, method: str, path: str, scope: str) -> Any:
        import requests

        headers = {"Accept": MANIFEST_TYPES}
        auth: Any = (self.username, self._password) if self._basic else None
        if scope in self._token:
            headers["Authorization"] = f"Bearer {self._token[scope]}"
        if self._session is None:
            self._session = requests.Session()
        try:
            response = self._session.request(method, self._url(path), headers=headers,
                                              auth=auth, timeout=self.timeout,
                                              verify=self.verify)
            scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", "")) \
                if response.status_code == 401 else ("", {})
            if scheme == "bearer" or (response.status_code == 401 and auth is None):
                if scheme == "bearer":  # also after basic auth: a token for this scope
                    auth = None
                    self._token[scope] = self._bearer(params, scope)
                    headers["Authorization"] = f"Bearer {self._token[scope]}"
                else:
                    auth, self._basic = (self.username, self._password), True
                response = self._session.request(method, self._url(path), headers=headers,
                                                  auth=auth, timeout=self.timeout,
                                                  verify=self.verify)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"registry {self.server}: TLS certificate not trusted "
                                f"({type(exc).__name__}); set registry.caRoot") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {self.server} is not reachable "
                                f"({type(exc).__name__})") from None
        if response.status_code == 401:
            raise RegistryError(f"registry {self.server}: login refused for "
                                f"{self.username!r} (check registry.username and its "
                                f"password secret)")
        return response

    def _bearer(self, params: dict[str, str], scope: str) -> str:
        import requests

        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.server}: a token challenge without a realm")
        query = {"scope": scope, **({"service": params["service"]} if "service" in params
                                    else {})}
        response = requests.get(realm, params=query, auth=(self.username, self._password),
                                timeout=self.timeout, verify=self.verify)
        if response.status_code in (401, 403):
            raise RegistryError(f"registry {self.server}: login refused for "
                                f"{self.username!r}")
        body = response.json() if response.ok else {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise RegistryError(f"registry {self.server}: no token from {realm} "
                                f"(HTTP {response.status_code})")
        return str(token)

    def digest(self, image: str) -> str:
        """The `sha256:...` the image's tag names now; RegistryError naming the image when
        the tag (or repository) does not exist."""
        ref = ImageRef.parse(image)
        path = f"/v2/{ref.repository}/manifests/{ref.tag}"
        scope = f"repository:{ref.repository}:pull"
        response = self._request("HEAD", path, scope)
        if response.status_code == 404:
            raise RegistryError(f"image {image} not found in registry {self.server}")
        if response.status_code != 200:
            raise RegistryError(f"registry {self.server}: HTTP {response.status_code} for "
                                f"{image}")
        digest = response.headers.get("Docker-Content-Digest", "")
        if digest.startswith("sha256:"):
            return str(digest)
        body = self._request("GET", path, scope)  # some registries omit the header on HEAD
        return "sha256:" + hashlib.sha256(body.content).hexdigest()


def pinned(image: str, digest: str) -> str:
    """`repo:tag` + digest -> `repo:tag@sha256:...` (the tag kept for people reading it)."""
    return f"{image.split('@', 1)[0]}@{digest}"
