"""Images in a real registry (Distribution 2.8, htpasswd, TLS from the sandbox's CA): the tool
resolves each tag to its digest before anything changes, and says which image is missing or
that the login was refused. No engine involved: images are pushed over the registry's API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.registry import RegistryServer, start
from tests.registry_push import push
from vedfin_ops.remote.registry import ImageRef, Registry, RegistryError, parse_challenge, pinned


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start(tmp_path_factory.mktemp("registry"))
    try:
        yield server
    finally:
        server.stop()


def _client(server: RegistryServer, password: str | None = None) -> Registry:
    return Registry(server.server, server.username, password or server.password,
                    ca=str(server.ca))


def _push(server: RegistryServer, repository: str, tag: str, content: str) -> str:
    return push(server.server, (server.username, server.password), str(server.ca),
                repository, tag, content)


def test_a_tag_resolves_to_the_digest_the_push_made(registry: RegistryServer) -> None:
    digest = _push(registry, "vedfin-sandbox/api", "v1", "api v1")
    assert _client(registry).digest(f"{registry.server}/vedfin-sandbox/api:v1") == digest


def test_a_re_pushed_tag_resolves_to_its_new_digest_and_the_old_pin_differs(
        registry: RegistryServer) -> None:
    image = f"{registry.server}/vedfin-sandbox/web:v2"
    first = _push(registry, "vedfin-sandbox/web", "v2", "web v2")
    second = _push(registry, "vedfin-sandbox/web", "v2", "web v2, rebuilt")
    assert first != second
    assert _client(registry).digest(image) == second
    assert pinned(image, first) == f"{image}@{first}"


def test_a_missing_tag_names_the_image(registry: RegistryServer) -> None:
    image = f"{registry.server}/vedfin-sandbox/api:does-not-exist"
    with pytest.raises(RegistryError, match=f"image {image} not found in registry"):
        _client(registry).digest(image)


def test_a_wrong_password_is_a_refused_login_and_never_shown(registry: RegistryServer) -> None:
    with pytest.raises(RegistryError) as info:
        _client(registry, "not-the-password-42").digest(
            f"{registry.server}/vedfin-sandbox/api:v1")
    assert "login refused" in str(info.value)
    assert "not-the-password-42" not in str(info.value)
    assert registry.password not in str(info.value)


def test_an_untrusted_certificate_says_so(registry: RegistryServer, tmp_path: Path) -> None:
    client = Registry(registry.server, registry.username, registry.password, ca=None)
    with pytest.raises(RegistryError, match="TLS certificate not trusted"):
        client.digest(f"{registry.server}/vedfin-sandbox/api:v1")


def test_a_stopped_registry_is_not_reachable(tmp_path: Path) -> None:
    server = start(tmp_path / "gone")
    server.stop()
    with pytest.raises(RegistryError, match="is not reachable"):
        _client(server).digest(f"{server.server}/vedfin-sandbox/api:v1")


@pytest.mark.parametrize(("ref", "parsed"), [
    ("127.0.0.1:5000/vedfin/api:v2", ("127.0.0.1:5000", "vedfin/api", "v2")),
    ("vedfinance/api:v2", ("", "vedfinance/api", "v2")),
    ("localhost/api", ("localhost", "api", "latest")),
    ("reg.example:443/a/b:c@sha256:00", ("reg.example:443", "a/b", "c")),
])
def test_image_references_split_into_server_repository_and_tag(
        ref: str, parsed: tuple[str, str, str]) -> None:
    image = ImageRef.parse(ref)
    assert (image.server, image.repository, image.tag) == parsed


def test_token_challenges_are_read() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",'
                                     'service="registry.example",scope="repository:a:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "registry.example",
                      "scope": "repository:a:pull"}
