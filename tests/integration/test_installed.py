"""The installed `vedfin` command deploys to the sandbox as `fab` does in the checkout: the
wheel in a fresh virtualenv, run from a folder outside the repository."""

from __future__ import annotations

from typing import Any

import pytest

from .test_deploy import _version
from .test_failures import _images, config  # noqa: F401  (the module's config fixture)

pytestmark = pytest.mark.integration


def test_the_installed_vedfin_command_deploys_to_the_sandbox(installed: Any,
                                                             sandbox_up: dict[str, Any],
                                                             config: Any) -> None:  # noqa: F811
    current = _images().get("vedfin-production_api-production", "")
    tag = "v1" if current.endswith(":v2") else "v2"
    result = installed.run(installed.vedfin, "-S", sandbox_up["ssh_config"], "-H", "sandbox",
                           "deploy.production", "--tag", tag,
                           env={"VEDFIN_CONFIG": str(sandbox_up["config"]), "COLUMNS": "200"},
                           timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "deploy.production: ok:" in result.stdout
    assert set(_images().values()) == {f"vedfin-sandbox/api:{tag}", f"vedfin-sandbox/web:{tag}"}
    assert _version(config) == f"api {tag}"
    status = installed.run(installed.vedfin, "-S", sandbox_up["ssh_config"], "-H", "sandbox",
                           "status", "--json", env={"VEDFIN_CONFIG": str(sandbox_up["config"])})
    assert status.returncode == 0 and '"drift": []' in status.stdout, status.stderr
