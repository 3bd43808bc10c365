"""Test helpers for the project's own Terraform (``terraform/``): a small brace-aware HCL scanner for the static
checks, and a working copy of the root driven by the real ``terraform`` binary with the hashicorp/aws provider
taken from a local filesystem mirror (the provider is never downloaded in tests).

The Terraform CLI config that names the mirror is written into the test's tmp dir and passed through the
subprocess environment only (``TF_CLI_CONFIG_FILE``); nothing is written to the user's home.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TERRAFORM_DIR = REPO_ROOT / "terraform"
STANDIN_DIR = REPO_ROOT / "templates" / "sandbox" / "terraform"

#: the root outputs bpmigrate's steps read (agreed cross-team API; the sandbox stand-in root declares the same names)
API_OUTPUTS = (
    "vpc_id",
    "private_subnet_ids",
    "public_subnet_ids",
    "eks_cluster_name",
    "eks_cluster_endpoint",
    "rds_endpoint",
    "rds_port",
    "rds_instance_id",
    "elasticache_endpoint",
    "elasticache_port",
    "elasticache_replication_group_id",
    "eks_oidc_provider_arn",
    "eks_irsa_role_arns",
    "eks_managed_addons",
)

#: module-call arguments that are Terraform meta-arguments, not module variables
MODULE_META_ARGS = frozenset({"source", "version", "providers", "count", "for_each", "depends_on"})

MIRROR_CANDIDATES = ("/opt/tf-plugins",)


# ---------------------------------------------------------------------------------------------------------------
# HCL scanning (no HCL library is installed: strings, comments and interpolations are masked, then braces counted)
# ---------------------------------------------------------------------------------------------------------------
class HclError(ValueError):
    """The text is not well-formed HCL (unbalanced brackets, unterminated string or comment)."""


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def mask(text: str, name: str = "<hcl>") -> str:
    """Same length as ``text``: comments and string contents blanked (quotes kept), braces inside ``${...}``
    blanked, interpolated expressions kept (so ``var.x`` inside a string still counts as a reference)."""
    out = list(text)
    n = len(text)
    i = 0
    # stack of modes: "code", "str", "interp" (with its own brace depth)
    modes: list[str] = ["code"]
    depths: list[int] = [0]
    starts: list[int] = [0]

    def blank(a: int, b: int) -> None:
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        mode = modes[-1]
        ch = text[i]
        if mode in ("code", "interp"):
            if ch == "#" or text.startswith("//", i):
                end = text.find("\n", i)
                end = n if end == -1 else end
                blank(i, end)
                i = end
                continue
            if text.startswith("/*", i):
                end = text.find("*/", i + 2)
                if end == -1:
                    raise HclError(f"{name}:{_line_of(text, i)}: unterminated /* comment")
                blank(i, end + 2)
                i = end + 2
                continue
            heredoc = re.compile(r"<<-?([A-Za-z_]\w*)\n").match(text, i) if text.startswith("<<", i) else None
            if heredoc:
                marker = heredoc.group(1)
                close = re.compile(rf"^\s*{re.escape(marker)}\s*$", re.M).search(text, heredoc.end())
                if close is None:
                    raise HclError(f"{name}:{_line_of(text, i)}: unterminated heredoc <<{marker}")
                blank(heredoc.end(), close.start())
                i = close.end()
                continue
            if ch == '"':
                modes.append("str")
                depths.append(0)
                starts.append(i)
                i += 1
                continue
            if mode == "interp":
                if ch == "{":
                    depths[-1] += 1
                    out[i] = " "
                elif ch == "}":
                    out[i] = " "
                    if depths[-1] == 0:
                        modes.pop()
                        depths.pop()
                        starts.pop()
                    else:
                        depths[-1] -= 1
            i += 1
            continue
        # inside a string
        if ch == "\\":
            blank(i, min(i + 2, n))
            i += 2
            continue
        if ch == '"':
            modes.pop()
            depths.pop()
            starts.pop()
            i += 1
            continue
        if ch == "\n":
            raise HclError(f"{name}:{_line_of(text, i)}: unterminated string")
        if text.startswith("${", i) or text.startswith("%{", i):
            blank(i, i + 2)
            modes.append("interp")
            depths.append(0)
            starts.append(i)
            i += 2
            continue
        out[i] = " "
        i += 1
    if len(modes) > 1:
        raise HclError(f"{name}:{_line_of(text, starts[-1])}: unterminated {modes[-1]}")
    return "".join(out)


_PAIRS = {"}": "{", "]": "[", ")": "("}
_HEADER_RE = re.compile(r'([A-Za-z_][\w-]*)((?:[ \t]+(?:"[^"\n]*"|[A-Za-z_][\w-]*))*)[ \t]*\{')
_LABEL_RE = re.compile(r'"([^"\n]*)"|([A-Za-z_][\w-]*)')
_ATTR_RE = re.compile(r"^[ \t]*([A-Za-z_][\w-]*)[ \t]*=(?!=)", re.M)


@dataclass
class Block:
    type: str
    labels: tuple[str, ...]
    body: str  # masked body (between the braces)
    line: int
    file: Path | None = None

    def attributes(self) -> list[str]:
        """Attribute names set directly in this block (not in nested blocks)."""
        return top_level_attributes(self.body)


def check_balanced(masked: str, name: str = "<hcl>") -> None:
    stack: list[tuple[str, int]] = []
    for pos, ch in enumerate(masked):
        if ch in "{[(":
            stack.append((ch, pos))
        elif ch in "}])":
            if not stack or stack[-1][0] != _PAIRS[ch]:
                raise HclError(f"{name}:{_line_of(masked, pos)}: unexpected {ch!r}")
            stack.pop()
    if stack:
        ch, pos = stack[-1]
        raise HclError(f"{name}:{_line_of(masked, pos)}: {ch!r} is never closed")


def _matching(masked: str, open_pos: int) -> int:
    depth = 0
    for pos in range(open_pos, len(masked)):
        ch = masked[pos]
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                return pos
    raise HclError(f"unclosed bracket at line {_line_of(masked, open_pos)}")


def top_level_attributes(masked_body: str) -> list[str]:
    """Names of ``name = ...`` at bracket depth 0 of a masked body."""
    names: list[str] = []
    depth = 0
    line_start = 0
    for pos, ch in enumerate(masked_body):
        if ch == "\n":
            line_start = pos + 1
            continue
        if pos == line_start and depth == 0:
            m = _ATTR_RE.match(masked_body, pos)
            if m:
                names.append(m.group(1))
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
    return names


def parse_blocks(text: str, name: str = "<hcl>", file: Path | None = None) -> list[Block]:
    """Top-level blocks of an HCL file (raises HclError if it is not well-formed)."""
    masked = mask(text, name)
    check_balanced(masked, name)
    blocks: list[Block] = []
    pos = 0
    n = len(masked)
    while pos < n:
        ch = masked[pos]
        if ch.isspace():
            pos += 1
            continue
        header = _HEADER_RE.match(text, pos)
        if header and masked[header.end() - 1] == "{":
            close = _matching(masked, header.end() - 1)
            labels = tuple(a or b for a, b in _LABEL_RE.findall(header.group(2)))
            blocks.append(Block(header.group(1), labels, masked[header.end() : close], _line_of(text, pos), file))
            pos = close + 1
            continue
        attr = _ATTR_RE.match(masked, pos)
        if attr:  # a top-level attribute (tfvars): skip to the end of its value
            depth = 0
            k = attr.end()
            while k < n:
                c = masked[k]
                if c in "{[(":
                    depth += 1
                elif c in "}])":
                    depth -= 1
                elif c == "\n" and depth == 0:
                    break
                k += 1
            pos = k
            continue
        raise HclError(f"{name}:{_line_of(text, pos)}: cannot parse {text[pos : pos + 30]!r}")
    return blocks


@dataclass
class ModuleInfo:
    """What a directory of .tf files declares and references."""

    path: Path
    blocks: list[Block] = field(default_factory=list)
    masked: dict[Path, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ModuleInfo:
        info = cls(path)
        for tf in sorted(path.glob("*.tf")):
            text = tf.read_text()
            info.masked[tf] = mask(text, str(tf))
            info.blocks.extend(parse_blocks(text, str(tf), tf))
        return info

    def of_type(self, kind: str) -> list[Block]:
        return [b for b in self.blocks if b.type == kind]

    def variables(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of_type("variable")}

    def required_variables(self) -> set[str]:
        return {name for name, b in self.variables().items() if "default" not in b.attributes()}

    def outputs(self) -> set[str]:
        return {b.labels[0] for b in self.of_type("output")}

    def locals(self) -> set[str]:
        return {name for b in self.of_type("locals") for name in b.attributes()}

    def module_calls(self) -> dict[str, Block]:
        return {b.labels[0]: b for b in self.of_type("module")}

    def references(self, pattern: str) -> set[str]:
        rx = re.compile(pattern)
        found: set[str] = set()
        for masked in self.masked.values():
            found.update(m.group(1) for m in rx.finditer(masked))
        return found

    def var_refs(self) -> set[str]:
        return self.references(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")

    def local_refs(self) -> set[str]:
        return self.references(r"(?<![\w.])local\.([A-Za-z_][\w-]*)")

    def module_output_refs(self) -> set[tuple[str, str]]:
        rx = re.compile(r"(?<![\w.])module\.([A-Za-z_][\w-]*)\.([A-Za-z_][\w-]*)")
        return {(m.group(1), m.group(2)) for masked in self.masked.values() for m in rx.finditer(masked)}


def module_source_string(call: Block, root: Path) -> str:
    """The literal ``source`` of a module call (read from the original file)."""
    assert call.file is not None
    text = call.file.read_text()
    lines = text.splitlines()[call.line - 1 :]
    for line in lines:
        m = re.match(r'\s*source\s*=\s*"([^"]+)"', line)
        if m:
            return m.group(1)
    raise HclError(f"module {call.labels[0]} in {call.file} has no literal source")


def check_root(root: Path) -> list[str]:
    """Static consistency problems of a root module and its local modules (empty list = consistent)."""
    problems: list[str] = []
    info = ModuleInfo.load(root)
    modules: dict[str, ModuleInfo] = {}
    for name, call in info.module_calls().items():
        source = module_source_string(call, root)
        mod_dir = (root / source).resolve()
        if not mod_dir.is_dir():
            problems.append(f"module {name}: source {source} does not exist")
            continue
        mod = ModuleInfo.load(mod_dir)
        modules[name] = mod
        declared = set(mod.variables())
        passed = set(call.attributes()) - MODULE_META_ARGS
        problems += [
            f"module {name}: passes {v}, not declared in {source}/variables.tf" for v in sorted(passed - declared)
        ]
        problems += [
            f"module {name}: required variable {v} of {source} is not passed"
            for v in sorted(mod.required_variables() - passed)
        ]
    for mod_name, out in sorted(info.module_output_refs()):
        if mod_name not in modules:
            problems.append(f"reference module.{mod_name}.{out}: no module {mod_name}")
        elif out not in modules[mod_name].outputs():
            problems.append(f"reference module.{mod_name}.{out}: module {mod_name} declares no output {out}")
    for where, mod in [(str(root), info), *((str(m.path), m) for m in modules.values())]:
        problems += [f"{where}: var.{v} is not declared" for v in sorted(mod.var_refs() - set(mod.variables()))]
        problems += [f"{where}: local.{v} is not defined" for v in sorted(mod.local_refs() - mod.locals())]
    return problems


def tfvars_keys(path: Path) -> list[str]:
    text = path.read_text()
    masked = mask(text, str(path))
    check_balanced(masked, str(path))
    if parse_blocks(text, str(path)):
        raise HclError(f"{path}: a tfvars file holds attributes only, not blocks")
    return top_level_attributes(masked)


def tfvars_string(path: Path, key: str) -> str | None:
    m = re.search(rf'^\s*{re.escape(key)}\s*=\s*"([^"]*)"', path.read_text(), re.M)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------------------------
# the real terraform binary + the aws provider from a filesystem mirror
# ---------------------------------------------------------------------------------------------------------------
def terraform_binary() -> str | None:
    return shutil.which("terraform")


def aws_provider_mirror() -> Path | None:
    """A filesystem mirror holding hashicorp/aws (``BPMIGRATE_TF_PLUGIN_MIRROR`` or a well-known location)."""
    candidates = [os.environ.get("BPMIGRATE_TF_PLUGIN_MIRROR", ""), *MIRROR_CANDIDATES]
    for cand in candidates:
        if not cand:
            continue
        aws = Path(cand) / "registry.terraform.io" / "hashicorp" / "aws"
        if aws.is_dir() and any(aws.glob("5.*/*/terraform-provider-aws*")):
            return Path(cand)
    return None


def provider_skip_reason() -> str | None:
    if terraform_binary() is None:
        return "no terraform binary on PATH (install terraform >= 1.5)"
    if aws_provider_mirror() is None:
        return (
            "the hashicorp/aws 5.x provider is not in a local filesystem mirror (looked in "
            + ", ".join(MIRROR_CANDIDATES)
            + "; set BPMIGRATE_TF_PLUGIN_MIRROR to one): providers are never downloaded in tests"
        )
    return None


def write_cli_config(path: Path, mirror: Path) -> Path:
    path.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{mirror}"\n'
        '    include = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "  direct {\n"
        '    exclude = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "}\n"
    )
    return path


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {
        n for n in names if n in (".terraform", ".terraform.lock.hcl") or n.endswith((".tfstate", ".tfstate.backup"))
    }


class TfError(RuntimeError):
    pass


class TfWorkdir:
    """A copy of ``terraform/`` in a tmp dir, run with the real binary; ``timings`` records each command."""

    def __init__(self, tmp: Path, *, local_backend: bool = True, extra_env: Mapping[str, str] | None = None) -> None:
        mirror = aws_provider_mirror()
        binary = terraform_binary()
        if mirror is None or binary is None:
            raise TfError(provider_skip_reason() or "terraform unavailable")
        self.binary = binary
        self.root = tmp / "root"
        shutil.copytree(TERRAFORM_DIR, self.root, ignore=_ignore)
        if local_backend:
            # an override file replaces the s3 backend of versions.tf for this working copy only
            (self.root / "backend_override.tf").write_text('terraform {\n  backend "local" {}\n}\n')
        self.cli_config = write_cli_config(tmp / "terraform.tfrc", mirror)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
        env.update(
            TF_CLI_CONFIG_FILE=str(self.cli_config),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION="us-east-1",
            AWS_DEFAULT_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        env.update(extra_env or {})
        self.env = env
        self.timings: list[tuple[str, float]] = []

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        # -no-color goes right after the (sub)command: Terraform stops reading flags at the first positional argument
        at = 2 if args[0] in ("workspace", "state", "providers") else 1
        argv = [self.binary, *args[:at], "-no-color", *args[at:]]
        proc = subprocess.run(
            argv,
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.timings.append((" ".join(a for a in args if not a.startswith("-var")), time.monotonic() - started))
        if check and proc.returncode != 0:
            raise TfError(
                f"terraform {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return proc

    def init(self, *backend_config: str) -> None:
        self.run("init", "-input=false", *(f"-backend-config={c}" for c in backend_config))

    def show_json(self, plan_file: Path | str) -> dict[str, Any]:
        out = self.run("show", "-json", str(plan_file)).stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def outputs(self) -> dict[str, Any]:
        raw: dict[str, Any] = json.loads(self.run("output", "-json").stdout)
        return {k: v["value"] for k, v in raw.items()}

    def state_list(self) -> list[str]:
        proc = self.run("state", "list", check=False)
        return proc.stdout.split() if proc.returncode == 0 else []

    def report(self) -> str:
        return "; ".join(f"{what}: {secs:.1f}s" for what, secs in self.timings)


def var_args(var_files: Iterable[str] = (), **variables: str) -> list[str]:
    return [*(f"-var-file={f}" for f in var_files), *(f"-var={k}={v}" for k, v in variables.items())]


def resources_of(plan: Mapping[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    """Planned ``after`` values of every resource of a type, by address."""
    found: dict[str, dict[str, Any]] = {}
    for rc in plan.get("resource_changes", []):
        if rc["type"] == rtype and rc.get("mode") == "managed":
            found[rc["address"]] = rc["change"].get("after") or {}
    return found


def data_reads_of(plan: Mapping[str, Any], dtype: str) -> dict[str, dict[str, Any]]:
    """Known config of every data source of a type whose read is deferred to apply (its inputs are unknown at plan
    time, e.g. an IAM policy document naming a resource not created yet), by address."""
    return {
        rc["address"]: rc["change"].get("after") or {}
        for rc in plan.get("resource_changes", [])
        if rc["type"] == dtype and rc.get("mode") == "data"
    }


def actions_of(plan: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        rc["address"]: list(rc["change"]["actions"])
        for rc in plan.get("resource_changes", [])
        if rc.get("mode") == "managed"
    }


def planned_addresses(plan: Mapping[str, Any], prefixes: Sequence[str]) -> set[str]:
    return {a for a in actions_of(plan) if a.startswith(tuple(prefixes))}
