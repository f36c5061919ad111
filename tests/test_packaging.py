"""Conda users get the same dependencies as pip users (runtime, dask and dev)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _normalize(spec: str) -> tuple[str, str]:
    """(name, version range) of a requirement; a platform marker does not apply to conda."""
    spec = spec.split(";")[0]
    name, version = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*(.*)$", spec.strip()).groups()
    return re.sub(r"\[.*\]", "", name).lower(), version.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(_normalize(s) for s in project["dependencies"] + extras["dev"] + extras["dask"])
    text = (ROOT / "environment.yml").read_text()
    dependencies = text.split("dependencies:", 1)[1].splitlines()
    specs = [m.group(1) for m in map(re.compile(r"^  - ([a-z].*)$").match, dependencies) if m]
    conda = dict(_normalize(s) for s in specs if _normalize(s)[0] not in ("python", "pip", "pip:"))
    assert conda == wanted


def _conda_specs(path: Path) -> dict:
    dependencies = path.read_text().split("dependencies:", 1)[1].splitlines()
    specs = [m.group(1) for m in map(re.compile(r"^  - ([a-z].*)$").match, dependencies) if m]
    return dict(_normalize(s) for s in specs if _normalize(s)[0] not in ("python", "pip", "pip:"))


def test_binder_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = dict(_normalize(s) for s in project["dependencies"] + extras["dask"] + extras["lab"])
    assert _conda_specs(ROOT / "binder" / "environment.yml") == wanted
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert post_build.splitlines()[1] == "set -euo pipefail" and "pip install" in post_build
    assert (ROOT / "binder" / "start").read_text().rstrip().endswith('exec "$@"')


def test_peers_pin_the_neuralforecast_the_figures_are_stated_against():
    peers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["peers"]
    assert "neuralforecast==3.3.0" in peers and "torch==2.13.0" in peers


def test_numpy_pin_has_savez_allow_pickle():
    """Checkpoints call np.savez(allow_pickle=False), a real parameter from numpy 2.2."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    numpy = dict(_normalize(s) for s in dependencies)["numpy"]
    lower = re.search(r">=(\d+)\.(\d+)", numpy).groups()
    assert tuple(map(int, lower)) >= (2, 2)
