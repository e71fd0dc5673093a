"""One version string: shark_nb.__version__, the User-Agent and pyproject.toml all read shark_nb/_version.py."""

import re
import tomllib
import warnings
from pathlib import Path

import httpx
import pytest

import shark_nb
from shark_nb import _version, client

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_version_is_the_one_in_version_py():
    assert shark_nb.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.dev\d+|rc\d+)?", shark_nb.__version__)


def test_pyproject_has_no_version_of_its_own_and_reads_version_py():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shark_nb._version.__version__"}


def test_setuptools_resolves_the_same_version_as_the_package():
    config = pytest.importorskip("setuptools.config.pyprojecttoml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resolved = config.read_configuration(ROOT / "pyproject.toml", expand=True)
    assert resolved["project"]["version"] == shark_nb.__version__


async def test_the_user_agent_of_api_and_download_requests_carries_the_version():
    seen = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["User-Agent"])
        return httpx.Response(404, json={"error": {"message": "no", "type": "not_found"}})

    c = client.AsyncShark(api_key="sk-" + "v" * 40, base_url="https://api.example/api/v1",
                          transport=httpx.MockTransport(record), download_transport=httpx.MockTransport(record))
    try:
        await c._api().get("https://api.example/api/v1/models")
        await c._dl().get("https://files.example/x.png")
    finally:
        await c.aclose()
    assert seen[0] == f"shark_nb/{shark_nb.__version__} httpx/{httpx.__version__}"
    assert seen[1] == f"shark_nb/{shark_nb.__version__}"
    assert client._VERSION is _version.__version__


def test_no_other_module_spells_the_version_out():
    literal = re.compile(r"""["']%s["']""" % re.escape(shark_nb.__version__))
    offenders = [p.relative_to(ROOT).as_posix() for p in (ROOT / "shark_nb").rglob("*.py")
                 if p.name != "_version.py" and literal.search(p.read_text("utf-8"))]
    offenders += ["pyproject.toml"] if literal.search((ROOT / "pyproject.toml").read_text("utf-8")) else []
    assert offenders == []
