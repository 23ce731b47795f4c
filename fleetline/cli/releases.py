"""`fleetline releases upload|list|delete` and `fleetline agents upgrade`: the agent's
releases and moving agents between them (docs/api.md, agent releases and self-upgrade);
and the one-line install `fleetline tokens create` prints for each uploaded platform."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Callable

from fleetline.cli import jobs as jobs_cli
from fleetline.cli.admin_client import Api, CliError
from fleetline.release_names import FILE

RELEASE_COLUMNS = ["version", "platform", "size", "sha256", "created_at", "created_by"]


def upload(api: Api, a) -> Any:
    path = Path(a.file)
    named = FILE.fullmatch(path.name)  # what make agent-release names its files
    version = a.version or (named and named.group("version"))
    platform = a.platform or (named and named.group("platform"))
    if not version or not platform:
        raise CliError("give --version and --platform (or a file named fleetline-agent-<version>-<platform>.pyz)")
    return api.call("POST", "/api/v1/admin/agent-releases", params={"version": version, "platform": platform},
                    content=path.read_bytes(), headers={"Content-Type": "application/octet-stream"})


def list_(api: Api, a) -> Any:
    return api.call("GET", "/api/v1/admin/agent-releases")


def delete(api: Api, a) -> Any:
    api.call("DELETE", f"/api/v1/admin/agent-releases/{a.version}/{a.platform}")
    return {"deleted": f"{a.version}/{a.platform}"}


def upgrade(run_job: Callable[[Api, Any, dict], Any]) -> Callable[[Api, Any], Any]:
    """agents upgrade: a job of agent.upgrade, with the window, failure limit and canary of
    any job (`run_job` is jobs run's, which waits and draws progress when asked)."""
    def handler(api: Api, a) -> Any:
        params: dict = {"version": a.version}
        if a.allow_downgrade:
            params["allow_downgrade"] = True
        if a.upgrade_timeout is not None:
            params["upgrade_timeout_s"] = a.upgrade_timeout
        command = {"type": "agent.upgrade", "params": params, "ttl_s": a.ttl}
        request = jobs_cli.job_request(a, command)
        if a.canary is not None:
            request["rollout"]["canary"] = a.canary
        return run_job(api, a, request)
    return handler


def install_lines(releases: list[dict], url: str, token_line: str, agent_args: list[str]) -> dict[str, str]:
    """For the newest version uploaded, one line per platform that, run as root on a
    machine with Python 3.9+, downloads the release from the gateway, checks its SHA-256,
    installs it with its systemd unit and enrols. `token_line` puts the registration token
    in "$d/token" (the shell's printf, a builtin: never an argument any process shows)."""
    if not releases:
        return {}
    newest = releases[0]["version"]  # the API lists newest first
    lines = {}
    for r in releases:
        if r["version"] != newest:
            continue
        source = f"{url.rstrip('/')}/api/v1/agent-releases/{r['version']}/{r['platform']}"
        install = ["python3", '"$d/agent.pyz"', "install", "--systemd", "--registration-token-file", '"$d/token"',
                   *[shlex.quote(x) for x in agent_args]]
        lines[r["platform"]] = (
            f"d=$(mktemp -d) && {token_line} && curl -fsSL -o \"$d/agent.pyz\" {shlex.quote(source)} && "
            f"echo '{r['sha256']}  '\"$d/agent.pyz\" | sha256sum -c - && {' '.join(install)}; rm -rf \"$d\"")
    return lines


def add_parsers(group, cmd, run_job: Callable[[Api, Any, dict], Any], agents) -> None:
    rel = group("releases", "agent releases (the .pyz make agent-release builds)")
    p = cmd(rel, "upload", upload, "upload a release (admin)")
    p.add_argument("file", help="dist/fleetline-agent-<version>-<platform>.pyz")
    p.add_argument("--version", help="[read from the file's name]")
    p.add_argument("--platform", help="linux-x86_64 or linux-aarch64 [read from the file's name]")
    cmd(rel, "list", list_, "list releases, newest first")
    p = cmd(rel, "delete", delete, "delete a release (admin)")
    p.add_argument("version")
    p.add_argument("platform")

    p = cmd(agents, "upgrade", upgrade(run_job), "move agents to a release, as a job (window, failures, canary)")
    p.add_argument("--version", required=True, help="the release to run")
    jobs_cli.target_options(p)
    p.add_argument("--max-in-flight", metavar="N|N%", help="at most this many upgrading at once")
    p.add_argument("--max-failures", type=int, help="halt once more targets than this fail")
    p.add_argument("--canary", type=int, metavar="N", help="upgrade N first; the rest once those succeeded")
    p.add_argument("--allow-downgrade", action="store_true", help="allow going back to an older version")
    p.add_argument("--upgrade-timeout", type=int, metavar="SECONDS",
                   help="how long the new version has to poll before it is rolled back [120]")
    p.add_argument("--ttl", type=int, default=86400,
                   help="seconds an offline agent may take to come back and upgrade [86400]")
    p.add_argument("--idempotency-key")
    p.add_argument("--dry-run", action="store_true", help="only count the targets")
    p.add_argument("--wait", action="store_true",
                   help="show progress until every target is final; non-zero unless all succeeded")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait")
