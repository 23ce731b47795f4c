"""The rooms and who may import whom, read from every import statement (lazy ones too):

- the kernel (`fleetline/*.py`) imports nothing of ours above it;
- each service imports the kernel, `services/common` and itself, never another service;
- the gateway imports the kernel and itself;
- the agent imports the standard library, httpx, cryptography, itself and the few kernel
  modules its own distribution carries (which themselves import only the standard library
  and cryptography): installing it brings no server dependency.
- the operator's commands (`fleetline/cli/`) may import anything of ours;
- inside dispatch, the rooms that decide (lifecycle, wakeups, output, retention, signing)
  know nothing of HTTP: no web framework, and none of the rooms that speak it (`agents/`,
  `admin/`, the app and its views). The endpoints call into them, never the reverse.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"fleetline", "services", "gateway", "agent", "bench", "tests", "migrations"}
# What the agent's distribution (agent/pyproject.toml) carries of the kernel.
AGENT_KERNEL = {"fleetline.ethos", "fleetline.labels", "fleetline.transport", "fleetline.private_files",
                "fleetline.utf8", "fleetline.release_names"}
AGENT_THIRD_PARTY = {"httpx", "cryptography"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from fleetline import statuses` names a module too
            found |= {f"{node.module}.{a.name}" for a in node.names if (ROOT / node.module.replace(".", "/") / f"{a.name}.py").exists()}
    return found


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in p.parts and "build" not in p.relative_to(ROOT).parts)


def ours(name: str) -> bool:
    return name.split(".")[0] in OURS


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def upward(folder: str, allowed) -> list[str]:
    return [f"{module_of(p)} imports {name}" for p in files(folder) for name in sorted(imports(p))
            if ours(name) and not allowed(module_of(p), name)]


def test_the_kernel_imports_nothing_of_ours_above_it():
    kernel = [p for p in files("fleetline") if "cli" not in p.relative_to(ROOT).parts and p.name != "__main__.py"]
    bad = [f"{module_of(p)} imports {n}" for p in kernel for n in sorted(imports(p))
           if ours(n) and (not within(n, "fleetline") or within(n, "fleetline.cli"))]
    assert bad == []


def test_services_import_the_kernel_common_and_themselves_only():
    def allowed(module: str, name: str) -> bool:
        service = ".".join(module.split(".")[:2])  # services.auth
        return (within(name, "fleetline") and not within(name, "fleetline.cli")) or \
            within(name, "services.common", service) or name == "services"
    assert upward("services", allowed) == []


def test_the_gateway_imports_the_kernel_and_itself_only():
    def allowed(module: str, name: str) -> bool:
        return (within(name, "fleetline") and not within(name, "fleetline.cli")) or within(name, "gateway")
    assert upward("gateway", allowed) == []


def test_the_agent_needs_nothing_but_its_own_distribution():
    carried = [ROOT / (m.replace(".", "/") + ".py") for m in AGENT_KERNEL]
    bad = []
    for path in files("agent") + carried:
        for name in sorted(imports(path)):
            top = name.split(".")[0]
            if ours(name):
                if not (within(name, "agent") or name in AGENT_KERNEL or name == "fleetline"):
                    bad.append(f"{module_of(path)} imports {name}")
            elif top not in sys.stdlib_module_names and top not in AGENT_THIRD_PARTY:
                bad.append(f"{module_of(path)} imports {name} (not in the agent's dependencies)")
    assert bad == []


def test_the_agents_distribution_carries_what_the_agent_imports():
    text = (ROOT / "agent" / "pyproject.toml").read_text()
    for module in AGENT_KERNEL:
        assert f'"{module}"' in text, module
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert {d.split('"')[1].split("~")[0].split(">")[0].split("=")[0] for d in deps.strip().splitlines()
            if '"' in d} == AGENT_THIRD_PARTY


DECIDING_ROOMS = ("lifecycle", "wakeups", "output", "retention", "signing")
SPEAKING = ("services.dispatch.agents", "services.dispatch.admin", "services.dispatch.app",
            "services.dispatch.views", "services.dispatch.api_errors", "services.dispatch.state",
            "services.dispatch.releases.api")


def test_dispatchs_deciding_rooms_know_nothing_of_http():
    rooms = {p.name for p in (ROOT / "services" / "dispatch").iterdir() if (p / "__init__.py").exists()}
    assert set(DECIDING_ROOMS) <= rooms  # a room renamed is a room this test must learn of
    bad = [f"{module_of(p)} imports {name}" for room in DECIDING_ROOMS
           for p in files(f"services/dispatch/{room}") for name in sorted(imports(p))
           if within(name, "starlette", "sse_starlette", *SPEAKING)]
    assert bad == []
