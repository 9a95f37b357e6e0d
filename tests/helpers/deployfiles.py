"""Reading the deployment files the way Docker and Compose read them, for checks without a Docker engine:
the Dockerfile through the official parser (`dockerfile`), compose files with PyYAML (plus Compose's `!reset`
tag), Compose's `${VAR:-default}` interpolation and override merging, and `.dockerignore` matching."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import dockerfile
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
PROMETHEUS_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"
ALERT_RULES = REPO / "docker" / "prometheus" / "alerts.yml"  # prometheus.yml's rule_files, beside it
GRAFANA = REPO / "docker" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "dcpsfr-inspection.json"
SERVICE = "inspect"  # the compose service that runs the inspection service


# --- Dockerfile ------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str  # the FROM image with build args substituted
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]

    def last(self, cmd: str) -> dockerfile.Command | None:
        found = self.all(cmd)
        return found[-1] if found else None


def substitute(text: str, variables: dict[str, str]) -> str:
    """Docker's `${NAME}` / `$NAME` substitution (unknown names become empty, as in a build)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def split_assignment(value: str) -> tuple[str, str | None]:
    name, sep, default = value.partition("=")
    return name, (default.strip('"') if sep else None)


def parse_dockerfile(path: Path = DOCKERFILE, build_args: dict[str, str] | None = None) -> list[Stage]:
    """The build stages, with each FROM resolved from ARG defaults overridden by `build_args`."""
    build_args = build_args or {}
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for command in dockerfile.parse_file(str(path)):
        if command.cmd == "ARG" and not stages:
            name, default = split_assignment(command.value[0])
            global_args[name] = build_args.get(name, default or "")
        elif command.cmd == "FROM":
            image = substitute(command.value[0], global_args)
            name = command.value[2] if len(command.value) > 2 else str(len(stages))
            stages.append(Stage(name=name, base=image))
        else:
            stages[-1].commands.append(command)
    return stages


def stage_args(stage: Stage, build_args: dict[str, str] | None = None) -> dict[str, str]:
    """The build args declared in a stage, with their defaults unless overridden."""
    build_args = build_args or {}
    values = {}
    for command in stage.all("ARG"):
        name, default = split_assignment(command.value[0])
        values[name] = build_args.get(name, default or "")
    return values


def image_env(stage: Stage, args: dict[str, str]) -> dict[str, str]:
    """ENV of one stage (without what its base image sets), build args substituted."""
    env: dict[str, str] = {}
    for command in stage.all("ENV"):
        pairs = command.value
        for name, value in zip(pairs[::2], pairs[1::2], strict=True):
            env[name] = substitute(value, {**args, **env})
    return env


def stage_chain(stages: list[Stage], name: str) -> list[Stage]:
    """A stage and the stages it is built FROM, base first."""
    by_name = {stage.name: stage for stage in stages}
    chain = [by_name[name]]
    while chain[0].base in by_name:
        chain.insert(0, by_name[chain[0].base])
    return chain


def is_pinned(image: str) -> bool:
    """A digest, or a tag with a version number (not `latest`, not a bare name)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag != "latest" and re.search(r"\d", tag) is not None


def flag_value(flags: tuple[str, ...], name: str) -> str | None:
    for flag in flags:
        if flag.startswith(f"--{name}="):
            return flag.split("=", 1)[1]
    return None


def mount_options(flag: str) -> dict[str, str]:
    """`--mount=type=bind,source=.,target=/src,rw` -> {"type": "bind", "source": ".", ...}."""
    options = {}
    for part in flag.removeprefix("--mount=").split(","):
        key, _, value = part.partition("=")
        options[key] = value or "true"
    return options


# --- .dockerignore -----------------------------------------------------------------------------------------------


def dockerignore_rules(path: Path = REPO / ".dockerignore") -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, glob_to_regex(line.lstrip("!").strip("/"))))
    return rules


def glob_to_regex(pattern: str) -> re.Pattern:
    """Docker's patterns: `*` and `?` within one path segment, `**` any number of segments."""
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append("(?:[^/]+/)*")
            continue
        regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment)
        parts.append(regex + "/")
    return re.compile("".join(parts).removesuffix("/") + "$")


def in_build_context(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether a path is sent to the builder: the last rule matching it or one of its parent folders wins."""
    segments = relative.strip("/").split("/")
    candidates = ["/".join(segments[: i + 1]) for i in range(len(segments))]
    included = True
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            included = negated
    return included


# --- Compose -----------------------------------------------------------------------------------------------------


class Reset:
    """Compose's `!reset` tag: the key is removed from the merged model."""


class ComposeLoader(yaml.SafeLoader):
    pass


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=ComposeLoader)  # a SafeLoader subclass


INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")


class MissingVariable(ValueError):
    """A `${V:?message}` (or `${V?message}`) variable is unset (or empty): Compose refuses to start."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose variable substitution for the forms these files use: $$, ${V}, ${V:-d}, ${V-d}, ${V:?message},
    ${V?message}, $V. Raises MissingVariable where Compose refuses a required variable."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        current = env.get(name)
        if match.group("op") == ":-" and not current:
            return match.group("default")
        if match.group("op") == "-" and current is None:
            return match.group("default")
        if (match.group("op") == ":?" and not current) or (match.group("op") == "?" and current is None):
            raise MissingVariable(f"required variable {name} is missing a value: {match.group('default')}")
        return current or ""

    if re.search(r"\$\{\w+:?\+", value):
        raise ValueError(f"interpolation form not handled by these checks: {value!r}")
    return INTERPOLATION.sub(replace, value)


def merge(base: Any, override: Any) -> Any:
    """Compose's override merge for mappings (sequences of the override replace the base's; `!reset` removes)."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if isinstance(value, Reset):
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def strip_anchors(model: dict[str, Any]) -> dict[str, Any]:
    """Drop top-level `x-` extension fields (YAML anchors already resolved by the loader)."""
    return {key: value for key, value in model.items() if not key.startswith("x-")}


def compose_model(*paths: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The merged, interpolated model of compose files, as `docker compose -f a -f b config` builds it."""
    model: dict[str, Any] = {}
    for path in paths:
        model = merge(model, load_yaml(path))
    return interpolate(strip_anchors(model), env or {})


def compose_schema() -> dict[str, Any]:
    """The official Compose Specification JSON schema, as vendored by check-jsonschema."""
    schema = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(schema.read_text())


def environment_dict(environment: Any) -> dict[str, str]:
    """A service's `environment` (mapping or KEY=VALUE list) as a dict."""
    if isinstance(environment, dict):
        return {key: "" if value is None else str(value) for key, value in environment.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in environment or [])


# --- the container's command and environment ---------------------------------------------------------------------


def container_process(env: dict[str, str], *compose_files: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment the inspection container runs with: the image's ENV (Dockerfile, final
    stage chain, build args from compose) overlaid by compose's `environment`, and compose's `command`."""
    model = compose_model(*compose_files, env=env)
    service = model["services"][SERVICE]
    build_args = {key: str(value) for key, value in service.get("build", {}).get("args", {}).items()}
    stages = parse_dockerfile(DOCKERFILE, build_args)
    final = stages[-1]
    image_environment: dict[str, str] = {}
    for stage in stage_chain(stages, final.name):
        image_environment.update(image_env(stage, stage_args(stage, build_args)))
    command = service.get("command") or list(final.last("CMD").value)
    return list(command), {**image_environment, **environment_dict(service.get("environment"))}
