"""Installing taskgate into a Celery project's environment shadows none of its modules.

The project here is a fresh virtualenv that already holds a `server` package and a
`worker` module of its own. taskgate is built from this checkout by pip (no build
isolation, no network) and installed into it; the project's modules must import as they
did, and taskgate's gateway and worker only as `taskgate.server` and `taskgate.worker`.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.stack import REPO_ROOT

PROJECT_SERVER = "ORIGIN = 'the project server package'\n"
PROJECT_WORKER = "ORIGIN = 'the project worker module'\n"
COMMANDS = ("taskgate", "taskgate-gateway", "taskgate-worker", "taskgate-purge")
# What a checkout holds beyond a clone: environments, caches, builds, logs.
LOCAL = (".git", ".venv", "node_modules", "build", "*.egg-info", "*cache*", ".run", "*.pyc")
# `python -m server`, `celery -A worker`, ["-m", "server"], `from worker.x import`: each
# would load a second copy of the code beside taskgate.server and taskgate.worker.
OLD_NAMES = re.compile(
    r"""(?<![\w-])(-m|-A|--app)(\s+|=|["'],\s*["'])(server|worker)\b(?![\w/-])"""
    r"|^\s*(from|import)\s+(server|worker)(?=[\s.]|$)",
    re.MULTILINE,
)
TEXT = (".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".js", ".go", "Dockerfile", "Makefile")


@dataclass(frozen=True)
class Project:
    """The project's virtualenv after `pip install` of taskgate, and the wheel it got."""

    venv: Path
    site_packages: Path
    wheel: Path

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        """Run in the project's environment, away from this checkout and its settings."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "TASKGATE"))}
        return subprocess.run(
            argv,
            cwd=self.venv,
            env={**clean, "PATH": f"{self.venv / 'bin'}{os.pathsep}{clean['PATH']}", **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def python(self, code: str) -> str:
        """What `code` prints in the project's Python; fails the test if it fails."""
        finished = self.run([str(self.venv / "bin" / "python"), "-c", code])
        assert finished.returncode == 0, finished.stderr
        return finished.stdout.strip()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site_packages = Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    )
    (site_packages / "server").mkdir()
    (site_packages / "server" / "__init__.py").write_text(PROJECT_SERVER)
    (site_packages / "worker.py").write_text(PROJECT_WORKER)
    # taskgate's dependencies (grpcio, Celery...) come from this virtualenv, after the
    # project's own site-packages: a path in a .pth file is appended to sys.path.
    (site_packages / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # A copy as a clone has it (links as links), so that no build/ of an earlier build
    # in this checkout leaks into the wheel, and this one leaves none behind.
    checkout = root / "checkout"
    shutil.copytree(REPO_ROOT, checkout, symlinks=True, ignore=shutil.ignore_patterns(*LOCAL))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(root)]
    subprocess.run([*build, str(checkout)], check=True, timeout=300)
    (wheel,) = root.glob("taskgate-*.whl")
    install = [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps"]
    subprocess.run([*install, "--no-index", str(wheel)], check=True, timeout=300)
    return Project(venv, site_packages, wheel)


def test_the_wheel_has_one_top_level_name(project: Project) -> None:
    names = zipfile.ZipFile(project.wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("taskgate-")}
    assert tops == {"taskgate"}
    assert "taskgate/server/app.py" in names
    assert "taskgate/worker/celery.py" in names


def test_the_projects_own_server_and_worker_still_import(project: Project) -> None:
    printed = project.python("import server, worker; print(server.ORIGIN); print(worker.ORIGIN)")
    assert printed.splitlines() == [
        "the project server package",
        "the project worker module",
    ]
    assert (project.site_packages / "server" / "__init__.py").read_text() == PROJECT_SERVER
    assert (project.site_packages / "worker.py").read_text() == PROJECT_WORKER


def test_every_module_of_the_gateway_and_the_worker_imports_from_the_install(
    project: Project,
) -> None:
    # With the project's own `server` on the path, a leftover `from server...` fails here.
    printed = project.python(
        "import pkgutil, taskgate, taskgate.server, taskgate.worker\n"
        "for package in (taskgate.server, taskgate.worker):\n"
        "    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "        print(__import__(module.name, fromlist=['_']).__file__)"
    )
    files = [Path(line) for line in printed.splitlines()]
    installed = project.site_packages / "taskgate"
    assert installed / "server" / "app.py" in files
    assert installed / "worker" / "celery.py" in files
    assert installed / "server" / "publish" / "broker.py" in files
    assert all(file.is_relative_to(installed) for file in files), printed


def test_the_console_scripts_run_the_installed_gateway_and_worker(project: Project) -> None:
    for command in COMMANDS:
        assert (project.venv / "bin" / command).is_file(), f"no {command} console script"
    # Both end at once on a bad setting, with the one-line message that names it.
    gateway = project.run(["taskgate-gateway"], TASKGATE_LISTEN="no-port-here")
    assert gateway.returncode == 1, gateway.stderr
    assert "TASKGATE_LISTEN" in gateway.stderr
    worker = project.run(["taskgate-worker"], TASKGATE_TASK_MODULES="billing.missing")
    assert worker.returncode == 1, worker.stderr
    assert "taskgate worker: configuration error" in worker.stderr
    assert "billing.missing" in worker.stderr
    help_text = project.run(["taskgate", "--help"])
    assert help_text.returncode == 0, help_text.stderr
    assert "submit" in help_text.stdout


def test_no_command_or_import_names_the_old_top_level_modules() -> None:
    found = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if not any(Path(d).match(p) for p in LOCAL)]
        for name in files:
            path = Path(root, name)
            if name.endswith(TEXT) and not path.is_symlink() and path != Path(__file__):
                text = path.read_text()
                found += [f"{path}: {m[0]}" for m in OLD_NAMES.finditer(text)]
    assert not found, "use taskgate.server / taskgate.worker:\n" + "\n".join(found)
