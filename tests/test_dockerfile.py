"""The Dockerfile, .dockerignore and requirements.lock, checked without a container engine."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import run_cli

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
LOCK = REPO / "requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VENV = "/opt/venv"


# --- a small Dockerfile parser ------------------------------------------------------------------


@dataclasses.dataclass
class Instruction:
    keyword: str
    value: str

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        """`COPY --from=build a b` -> ({"from": "build"}, ["a", "b"]) (shell form only)."""
        flags, args = {}, []
        for word in shlex.split(self.value):
            if word.startswith("--") and not args:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                args.append(word)
        return flags, args

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.value)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.base} has no {keyword}"
        return found[-1]


def parse_instructions(text: str) -> list[Instruction]:
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # comment lines inside a continuation are dropped, as docker does
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ${ARG} substituted in FROM lines."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in parse_instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            words = [w for w in words if not w.startswith("--platform")]
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args[m.group(1) or m.group(2)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name, []))
        elif not stages:
            assert instruction.keyword == "ARG", f"{instruction.keyword} before the first FROM"
            key, _, default = instruction.value.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[1]


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


def test_parser_understands_continuations_args_and_stages() -> None:
    args, stages = parse_dockerfile(
        "ARG B=python:3.11.9-slim\n# c\nFROM ${B} AS build\nRUN a \\\n  # inner\n  && b\n"
        "FROM $B\nCOPY --from=build --chown=1:1 /x /y\nUSER 1:1\n"
    )
    assert args == {"B": "python:3.11.9-slim"}
    assert [(s.base, s.name) for s in stages] == [("python:3.11.9-slim", "build"), ("python:3.11.9-slim", None)]
    assert stages[0].last("RUN").value == "a  && b"
    assert stages[1].last("COPY").flags_and_args() == ({"from": "build", "chown": "1:1"}, ["/x", "/y"])


# --- .dockerignore, the way docker reads it ----------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!")).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):  # "**/" also matches no directory at all
                    regex = regex[:-2] + "(?:.*/)?"
                    i += 1
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((negate, re.compile(regex + r"\Z")))
    return patterns


def ignored(relative: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent directories
    decides; `!` re-includes."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in patterns:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def test_dockerignore_matcher_follows_docker_semantics() -> None:
    patterns = dockerignore_patterns()
    assert ignored("tests/test_manifests.py", patterns)
    assert ignored(".venv/bin/python", patterns)
    assert ignored(".git/HEAD", patterns)
    assert not ignored("operator/whatsapp_operator/cli.py", patterns)
    assert ignored("operator/whatsapp_operator/__pycache__/cli.cpython-311.pyc", patterns)
    assert ignored("operator/whatsapp_operator.egg-info/PKG-INFO", patterns)
    assert not ignored("crds/whatsappinstances.whatsapp-operator.io.yaml", patterns)


def test_every_copy_source_exists_and_reaches_the_build_context(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    sources = []
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            assert instruction.keyword == "COPY", "use COPY, not ADD"
            flags, args = instruction.flags_and_args()
            if "from" in flags:
                continue
            sources.extend(args[:-1])
    assert sources
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY source {source} does not exist"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        kept = [f for f in files if not ignored(str(f.relative_to(REPO)), patterns)]
        assert kept, f"COPY source {source} is excluded by .dockerignore"
    # What the wheel build needs is in the context.
    for needed in (
        "pyproject.toml",
        "README.md",
        "requirements.lock",
        "operator/whatsapp_operator/cli.py",
        "operator/whatsapp_operator/py.typed",
        "crds/whatsappinstances.whatsapp-operator.io.yaml",
    ):
        assert not ignored(needed, patterns), needed


# --- stages, user, entry point ------------------------------------------------------------------


def test_base_images_are_pinned_slim_python_and_the_same_in_every_stage(stages: list[Stage]) -> None:
    bases = {s.base for s in stages if s.base not in {t.name for t in stages}}
    assert len(bases) == 1, f"the venv's python symlink needs one base image, got {bases}"
    (base,) = bases
    image, _, digest = base.partition("@")
    name, _, tag = image.rpartition(":")
    assert name in ("python", "docker.io/library/python"), base
    assert tag and tag != "latest", f"{base} is not pinned"
    assert re.fullmatch(r"3\.1[1-9]\.\d+-slim(-[a-z]+)?", tag), f"{tag}: pin major.minor.patch of a slim image"
    assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)


def python_minor(stages: list[Stage]) -> str:
    tag = stages[-1].base.split("@")[0].rpartition(":")[2]
    return ".".join(tag.split("-")[0].split(".")[:2])


def test_multi_stage_build_copies_only_the_venv_and_the_crds(stages: list[Stage], final: Stage) -> None:
    build = [s for s in stages[:-1] if s.name]
    assert len(build) == 1 and build[0].name == "build"
    assert any(f"venv --without-pip {VENV}" in r.value or f"venv {VENV}" in r.value for r in build[0].all("RUN"))
    assert any("-r requirements.lock" in r.value and "--no-deps" in r.value for r in build[0].all("RUN"))
    assert any("pip" in r.value and " check" in r.value for r in build[0].all("RUN"))
    copies = [c.flags_and_args() for c in final.all("COPY")]
    assert copies == [({"from": "build"}, [VENV, VENV])]  # the CRDs come inside the wheel


def test_the_wheel_is_built_with_the_crds_it_carries(stages: list[Stage]) -> None:
    build = next(s for s in stages if s.name == "build")
    instructions = [(i.keyword, i.value) for i in build.instructions]
    crds_copied = next(
        n for n, (kind, value) in enumerate(instructions) if kind == "COPY" and value.startswith("crds/")
    )
    wheel_built = next(n for n, (kind, value) in enumerate(instructions) if kind == "RUN" and "pip wheel" in value)
    assert crds_copied < wheel_built


def test_the_package_carries_the_crds_as_package_data() -> None:
    # In the source tree the package's crds/ is a link to the top-level crds/, and pyproject.toml
    # ships its YAML files in the wheel, where cli.default_crds_dir() looks first.
    import whatsapp_operator
    from whatsapp_operator.cli import main as cli

    package = Path(whatsapp_operator.__file__).resolve().parent
    assert (package / "crds").resolve() == (REPO / "crds").resolve()
    assert "crds/*.yaml" in PYPROJECT["tool"]["setuptools"]["package-data"]["whatsapp_operator"]
    assert cli.default_crds_dir().resolve() == (REPO / "crds").resolve()


def test_final_stage_runs_as_a_numeric_non_root_user(final: Stage) -> None:
    user = final.last("USER").value
    match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    assert match, f"USER {user} must be numeric (runAsNonRoot cannot verify a user name)"
    uid, gid = match.groups()
    assert int(uid) != 0 and gid is not None and int(gid) != 0
    # Nothing after USER may need root.
    after = final.instructions[final.instructions.index(final.last("USER")) :]
    assert not [i for i in after if i.keyword == "RUN"]


def test_entrypoint_is_the_exec_form_console_script(final: Stage) -> None:
    entrypoint = final.last("ENTRYPOINT").exec_form()
    assert entrypoint is not None, "ENTRYPOINT must be exec form: no shell at run time"
    scripts = PYPROJECT["project"]["scripts"]
    assert entrypoint == [f"{VENV}/bin/whatsapp-operator"]
    target = scripts[Path(entrypoint[0]).name]
    module, _, attribute = target.partition(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    cmd = final.last("CMD").exec_form()
    assert cmd is not None, "CMD must be exec form"
    assert cmd[0] == "run" and "--all-namespaces" in cmd


def test_cmd_is_accepted_by_the_real_command_line(final: Stage) -> None:
    cmd = final.last("CMD").exec_form()
    ok = run_cli(cmd)
    assert ok.returncode == 2 and "EVOLUTION_API_URL: not set" in ok.stderr, ok.stderr
    bad = run_cli([*cmd, "--bogus"])
    assert bad.returncode == 2 and "unrecognized arguments" in bad.stderr, bad.stderr


def test_environment_ports_and_liveness(final: Stage) -> None:
    env = " ".join(i.value for i in final.all("ENV"))
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", env)
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    exposed = {int(p.split("/")[0]) for i in final.all("EXPOSE") for p in i.value.split()}
    assert exposed == {8080, 9090}
    cmd = final.last("CMD").exec_form()
    liveness = cmd[cmd.index("--liveness") + 1]
    assert re.fullmatch(r"http://0\.0\.0\.0:(\d+)/healthz", liveness)
    assert int(liveness.split(":")[2].split("/")[0]) in exposed


# --- requirements.lock --------------------------------------------------------------------------


def read_lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)", line)
        assert match, f"requirements.lock: {line!r} is not an exact pin"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{name} pinned twice"
        pins[name] = Version(match.group(2))
    return pins


def test_lock_pins_every_runtime_dependency_within_pyproject_ranges() -> None:
    pins = read_lock()
    assert canonicalize_name(PYPROJECT["project"]["name"]) not in pins, "the project itself comes from the wheel"
    for spec in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is outside pyproject's {requirement.specifier}"
        )
    # Test tooling stays out of the image (aiohttp is in the test extra too, but kopf needs it).
    assert not {"pytest", "pytest-asyncio", "python-socketio", "lupa"} & set(pins)
    assert not {"pip", "setuptools", "wheel"} & set(pins)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_lock_is_closed_under_dependencies(machine: str) -> None:
    """Every requirement of a locked package (where the same version is installed here to read its
    metadata) is locked too, for the image's Python on linux/amd64 and linux/arm64."""
    pins = read_lock()
    environment = default_environment() | {
        "python_version": python_minor(parse_dockerfile(DOCKERFILE.read_text())[1]),
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": machine,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    checked = 0
    for name, version in pins.items():
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(distribution.version) != version:
            continue
        checked += 1
        for spec in distribution.requires or []:
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            dependency = canonicalize_name(requirement.name)
            assert dependency in pins, f"{name} needs {requirement}, which requirements.lock lacks"
            assert requirement.specifier.contains(pins[dependency], prereleases=True), (
                f"{name} needs {requirement}, lock has {pins[dependency]}"
            )
    # The project's own requirements resolve within the lock as well.
    for spec in PYPROJECT["project"]["dependencies"]:
        assert canonicalize_name(Requirement(spec).name) in pins
    assert checked >= len(pins) // 2, f"only {checked} of {len(pins)} locked versions are installed to check"
