"""Container image builder: detect a WORKING builder (docker engine or buildah), build and push images.

A ``docker`` CLI on PATH is not enough: the engine must answer (``docker info``). On a machine with the CLI but no
daemon, detection reports "docker CLI present but no engine" instead of failing half-way through a build.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migrate.errors import AdapterError

if TYPE_CHECKING:
    from migrate.adapters.proc import ProcRunner
    from migrate.config import EnvConfig


@dataclass(frozen=True)
class BuilderInfo:
    tool: str | None  # "docker" | "buildah" | None (no working builder)
    version: str = ""
    reasons: list[str] = field(default_factory=list)  # why each candidate was (not) chosen

    @property
    def available(self) -> bool:
        return self.tool is not None

    def describe(self) -> str:
        if self.tool:
            return f"{self.tool} {self.version}".strip()
        return "no working container builder: " + "; ".join(self.reasons)


class Builder:
    def __init__(
        self, proc: ProcRunner, *, candidates: tuple[str, ...] = ("docker", "buildah"), probe_timeout: float = 10.0
    ):
        self.proc = proc
        self.candidates = candidates
        self.probe_timeout = probe_timeout
        self._info: BuilderInfo | None = None

    def detect(self, *, refresh: bool = False) -> BuilderInfo:
        """The first candidate whose engine answers; otherwise None with one reason per candidate."""
        if self._info is not None and not refresh:
            return self._info
        reasons: list[str] = []
        chosen: BuilderInfo | None = None
        for tool in self.candidates:
            path = shutil.which(tool)
            if path is None:
                reasons.append(f"{tool} not on PATH")
                continue
            args = [path, "info", "--format", "{{.ServerVersion}}"] if tool == "docker" else [path, "version"]
            try:
                res = self.proc.run(args, check=False, timeout=self.probe_timeout, service=tool)
            except AdapterError as exc:
                reasons.append(f"{tool} present but did not answer ({exc.what})")
                continue
            out = res.stdout.strip()
            if tool == "docker":
                if res.returncode != 0 or not out:
                    err = (res.stderr.strip().splitlines() or ["engine did not answer"])[-1]
                    reasons.append(f"docker CLI present but no engine ({err[:160]})")
                    continue
                version = out.splitlines()[0]
            else:
                if res.returncode != 0:
                    err = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
                    reasons.append(f"buildah present but not working ({err[:160]})")
                    continue
                version = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version")), "")
            reasons.append(f"{tool} engine answers")
            chosen = BuilderInfo(tool, version, reasons)
            break
        self._info = chosen or BuilderInfo(None, "", reasons)
        return self._info

    def _tool(self) -> str:
        info = self.detect()
        if info.tool is None:
            raise AdapterError(
                "no working container builder",
                info.describe(),
                "start a Docker engine (or install buildah), or push the images elsewhere and set "
                '[steps.images] tags = {service = "tag"} in migrate.toml',
                service="builder",
            )
        return info.tool

    def login(self, registry: str, username: str, password: str) -> None:
        tool = self._tool()
        self.proc.run(
            [tool, "login", "--username", username, "--password-stdin", registry],
            input_text=password,
            timeout=120,
            service=tool,
        )

    def build(
        self,
        context: Path,
        image: str,
        *,
        dockerfile: Path | None = None,
        build_args: dict[str, str] | None = None,
        timeout: float = 3600,
    ) -> None:
        tool = self._tool()
        args: list[str | Path] = [tool, "build" if tool == "docker" else "bud", "-t", image]
        if dockerfile is not None:
            args += ["-f", dockerfile]
        for key, value in sorted((build_args or {}).items()):
            args += ["--build-arg", f"{key}={value}"]
        args.append(context)
        self.proc.run(args, timeout=timeout, service=tool)

    def push(self, image: str, *, timeout: float = 3600) -> None:
        tool = self._tool()
        self.proc.run([tool, "push", image], timeout=timeout, service=tool)


def from_config(env: EnvConfig, **_: Any) -> Builder:
    from migrate.adapters.proc import ProcRunner

    return Builder(ProcRunner())
