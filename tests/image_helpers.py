"""The Dockerfile read as data, and its stages' commands run here without a Docker engine.

A stage is emulated in a directory of its own standing for the stage's file system:
COPY copies from the repository into it, RUN runs the stage's `pip` commands in a shell
(cwd the stage's WORKDIR, the stage's ENV set, a given virtualenv's programs first on
PATH), and `--mount=type=bind` targets are rewritten to the files they would show.
Commands that need root in an image (useradd) are not run; the tests check them as text.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from scripts.stack import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
# This machine's settings that would change what pip installs or what Python imports.
_HOST_SETTINGS = ("PIP_", "PYTHON", "VIRTUAL_ENV", "CELERY_", "TASKGATE_")


@dataclass
class Stage:
    """One FROM ... and the instructions after it, as (KEYWORD, arguments)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def arguments(self, keyword: str) -> list[str]:
        """The arguments of every `keyword` instruction of this stage, in order."""
        return [arguments for key, arguments in self.instructions if key == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV, written in the `KEY=value` form."""
        found: dict[str, str] = {}
        for arguments in self.arguments("ENV"):
            for item in shlex.split(arguments):
                key, _, value = item.partition("=")
                found[key] = value
        return found

    def workdir(self) -> str:
        """The stage's last WORKDIR, `/` without one."""
        return (self.arguments("WORKDIR") or ["/"])[-1]

    def cmd(self) -> list[str]:
        """The stage's CMD, in exec form."""
        found: list[str] = json.loads(self.arguments("CMD")[-1])
        return found


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(arguments.split())))
    return found


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The Dockerfile's stages, in order."""
    found: list[Stage] = []
    for keyword, arguments in instructions(path.read_text()):
        if keyword == "FROM":
            base, _, name = arguments.partition(" AS ")
            found.append(Stage(base.strip(), name.strip() or None))
        elif found:
            found[-1].instructions.append((keyword, arguments))
    return found


def split_mounts(run: str) -> tuple[list[dict[str, str]], str]:
    """A RUN's `--mount=` flags, each as a dict, and the shell command after them."""
    mounts = []
    rest = run
    while match := re.match(r"--mount=(\S+)\s+", rest):
        mounts.append(dict(part.split("=", 1) for part in match.group(1).split(",")))
        rest = rest[match.end() :]
    return mounts, rest


def clean_env(image_env: dict[str, str], venv: Path) -> dict[str, str]:
    """This machine's environment without its pip, Python and taskgate settings, plus
    the image's ENV, `venv`'s programs first on PATH, and no pip config file."""
    host = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_SETTINGS)}
    path = f"{venv / 'bin'}{os.pathsep}{host.get('PATH', '')}"
    return {**host, **image_env, "PATH": path, "PIP_CONFIG_FILE": os.devnull}


class Emulation:
    """The Dockerfile's stages run here, each in `root / <stage name>`, into `venv`."""

    def __init__(self, root: Path, venv: Path) -> None:
        self.root = root
        self.venv = venv
        self.stages = stages()
        self._dirs = [root / (s.name or f"stage-{i}") for i, s in enumerate(self.stages)]
        self._named = {s.name: d for s, d in zip(self.stages, self._dirs, strict=True) if s.name}

    def run_all(self) -> None:
        """Emulate every stage in order."""
        for stage, stage_dir in zip(self.stages, self._dirs, strict=True):
            workdir = stage_dir
            stage_dir.mkdir(parents=True, exist_ok=True)
            for keyword, arguments in stage.instructions:
                if keyword == "WORKDIR":
                    workdir = stage_dir / arguments.lstrip("/")
                    workdir.mkdir(parents=True, exist_ok=True)
                elif keyword == "COPY":
                    self._copy(arguments, workdir)
                elif keyword == "RUN":
                    self._run(arguments, workdir, stage.env())

    def _copy(self, arguments: str, workdir: Path) -> None:
        *sources, destination = arguments.split()
        target = workdir / destination
        for source in sources:
            origin = REPO_ROOT / source
            into = target / origin.name if destination.endswith("/") else target
            into.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, into)

    def _bind_source(self, mount: dict[str, str]) -> Path:
        if "from" in mount:
            return self._named[mount["from"]] / mount["source"].lstrip("/")
        return REPO_ROOT / mount["source"]

    def _run(self, arguments: str, cwd: Path, image_env: dict[str, str]) -> None:
        mounts, command = split_mounts(arguments)
        if shlex.split(command)[0] != "pip":
            return  # Needs root in an image (useradd); the tests check it as text.
        for mount in mounts:
            if mount.get("type") == "bind":
                command = command.replace(mount["target"], str(self._bind_source(mount)))
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=cwd,
            env=clean_env(image_env, self.venv),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise AssertionError(f"RUN {command} exited {done.returncode}:\n{done.stderr[-3000:]}")
