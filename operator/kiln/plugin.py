"""``kubectl kiln``: a kubectl plugin for Kiln's day-to-day verbs (create, update, stop, start, restart, register,
promote, approve, reject, history, get, call).

Each verb makes the API call a user could make with kubectl (its ``--help`` says which), with the user's
own credentials: RBAC and the audit log see the user, as with kubectl. Installed as the console script
``kubectl-kiln``; with it on PATH, ``kubectl kiln ...`` runs it. ``kubectl_complete-kiln`` answers kubectl's
plugin completion (kubectl 1.26+), and ``kubectl kiln completion bash|zsh`` prints a completion script
for ``kubectl-kiln`` itself. See docs/plugin.md.

Exit codes: 0 done, 1 the API server (or the model called) refused or failed, its message printed,
2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn

from kiln.names import (
    A_RESTARTED_AT,
    API_VERSION,
    APPROVAL_POLICIES,
    APPROVALS,
    ARTIFACTS,
    DEPLOYMENTS,
    GROUP,
    L_DEPLOYMENT,
    L_WORKLOAD,
    VERSION,
    WORKLOADS,
)

PROG = "kubectl kiln"
DEV_SERVICE_SUFFIX = "-dev"  # kiln.api.models.DEV_SERVICE_SUFFIX (not imported: completion stays fast)
IMPORTANCES = ("Critical", "High", "Moderate", "Low")  # kiln.api.models.Importance
WATCH_INTERVAL = 2.0
Obj = dict[str, Any]

# The kinds the verbs take, by every name kubectl accepts for them.
KINDS: dict[str, tuple[str, ...]] = {
    "artifact": ("artifact", "artifacts", "kart", f"artifact.{GROUP}", f"artifacts.{GROUP}"),
    "workload": ("workload", "workloads", "kwl", f"workload.{GROUP}", f"workloads.{GROUP}"),
    "deployment": ("deployment", "deployments", "kdep", f"deployment.{GROUP}", f"deployments.{GROUP}"),
}
PLURALS = {"artifact": ARTIFACTS, "workload": WORKLOADS, "deployment": DEPLOYMENTS}


class Failed(Exception):
    """An error to print (``error: ...`` or the API server's message) before exiting with 1."""


# --------------------------------------------------------------------------------------------------
# The API: the kubernetes client, configured as kubectl would be
# --------------------------------------------------------------------------------------------------


def _api_message(e: Any) -> str:
    """An ApiException as kubectl prints it: ``Error from server (NotFound): ...``."""
    try:
        body = json.loads(e.body)
        return f"Error from server ({body.get('reason') or e.reason}): {body.get('message') or e.body}"
    except (TypeError, ValueError, AttributeError):
        return f"Error from server ({e.reason}): {e.body or e.status}"


class Kube:
    """The user's API client (kubeconfig, context, impersonation) and the namespace to work in."""

    def __init__(self, args: argparse.Namespace) -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        self.kubeconfig: str | None = getattr(args, "kubeconfig", None)
        self.context: str | None = getattr(args, "context", None)
        self.as_user: str | None = getattr(args, "as_user", None)
        self.as_groups: list[str] = getattr(args, "as_group", None) or []
        cfg: Any = config
        try:
            self.api: Any = cfg.new_client_from_config(config_file=self.kubeconfig, context=self.context)
            namespace = self._context_namespace()
        except ConfigException as e:
            if self.kubeconfig or self.context or not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise Failed(f"error: {e}") from None
            conf = client.Configuration()
            cfg.load_incluster_config(client_configuration=conf)
            self.api = client.ApiClient(conf)
            namespace = _incluster_namespace()
        if self.as_user:
            self.api.set_default_header("Impersonate-User", self.as_user)
        if self.as_groups:
            self.api.set_default_header("Impersonate-Group", self.as_groups[0])
        self.namespace: str = getattr(args, "namespace", None) or namespace
        cl: Any = client
        self.custom: Any = cl.CustomObjectsApi(self.api)
        self.core: Any = cl.CoreV1Api(self.api)

    def _context_namespace(self) -> str:
        from kubernetes import config

        cfg: Any = config
        contexts, current = cfg.list_kube_config_contexts(config_file=self.kubeconfig)
        ctx = next((c for c in contexts if c.get("name") == self.context), None) if self.context else current
        return str(((ctx or {}).get("context") or {}).get("namespace") or "default")

    def flags(self) -> list[str]:
        """The same connection for a kubectl subprocess."""
        out = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        out += [f"--context={self.context}"] if self.context else []
        out += [f"--as={self.as_user}"] if self.as_user else []
        out += [f"--as-group={g}" for g in self.as_groups]
        return [*out, f"--namespace={self.namespace}"]

    # The custom objects, as dicts.
    def get(self, kind: str, name: str) -> Obj:
        return dict(self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURALS[kind], name))

    def get_or_none(self, kind: str, name: str) -> Obj | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.get(kind, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def items(self, plural: str) -> list[Obj]:
        return list(self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural)["items"])

    def merge_patch(self, kind: str, name: str, body: Obj) -> Obj:
        return dict(self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[kind], name, body,
            _content_type="application/merge-patch+json"))

    def create(self, plural: str, body: Obj, namespace: str | None = None) -> Obj:
        return dict(self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace or self.namespace,
                                                                plural, body))

    def pods(self, label: str, values: Sequence[str]) -> list[Obj]:
        if not values:
            return []
        r = self.core.list_namespaced_pod(self.namespace, label_selector=f"{label} in ({','.join(values)})",
                                          _preload_content=False)
        return list(json.loads(r.data)["items"])


def _incluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def _dump(data: Any, output: str) -> None:
    if output == "json":
        print(json.dumps(data, indent=4))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), end="")


def _done(obj: Obj, kind: str, what: str, output: str | None, note: str = "") -> None:
    """What a mutating verb prints: kubectl's ``kind.group/name verb``, the object (-o json|yaml), or its name."""
    ref = f"{kind}.{GROUP}/{obj['metadata']['name']}"
    if output == "name":
        print(ref)
    elif output:
        _dump(obj, output)
    else:
        print(f"{ref} {what}{note}")


def _age(timestamp: str | None, now: datetime | None = None) -> str:
    """kubectl's human-readable age (k8s.io/apimachinery/pkg/util/duration.HumanDuration)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    s = int(((now or datetime.now(UTC)) - then).total_seconds())
    if s < -1:
        return "<invalid>"
    s = max(s, 0)
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 120:
        return f"{s}s"
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 192:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if h < 24 * 365 * 2:
        return f"{d}d"
    y = d // 365
    return f"{y}y{d % 365}d" if h < 24 * 365 * 8 and d % 365 else f"{y}y"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           paint: Callable[[int, str, str], str] | None = None) -> str:
    """Columns padded like kubectl's (three spaces apart); ``paint(column, raw, padded)`` may colour a cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = []
        for i, cell in enumerate(row):
            padded = cell if i == len(row) - 1 else cell.ljust(widths[i])
            cells.append(paint(i, cell, padded) if paint and n else padded)
        lines.append("   ".join(cells).rstrip())
    return "\n".join(lines)


def _use_colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


COLOURS = {"True": "32", "False": "31"}  # green, red; anything else yellow


def _paint_ready(column: int) -> Callable[[int, str, str], str]:
    def paint(i: int, raw: str, padded: str) -> str:
        if i != column or raw in ("", "-"):
            return padded
        return f"\033[{COLOURS.get(raw, '33')}m{padded}\033[0m"
    return paint


# --------------------------------------------------------------------------------------------------
# The verbs
# --------------------------------------------------------------------------------------------------


def _target(args: argparse.Namespace, allowed: Sequence[str]) -> tuple[str, str]:
    """The kind and name of ``KIND NAME`` or ``KIND/NAME``, the kind one of ``allowed``."""
    kind: str = args.kind
    name: str | None = args.name
    if "/" in kind:
        if name:
            _usage(args, f"there is no need to name it twice: {kind} {name}")
        kind, name = kind.split("/", 1)
    canonical = next((k for k in allowed if kind.lower() in KINDS[k]), None)
    if canonical is None:
        wanted = " or ".join(f"{k} ({k}.{GROUP})" for k in allowed)
        _usage(args, f"{args.command} works on a {wanted}, not {kind!r}")
    if not name:
        _usage(args, f"which {canonical}? {args.parser.prog} {canonical} NAME")
    return canonical, name


def _usage(args: argparse.Namespace, message: str) -> NoReturn:
    """A usage error: the verb's usage and the message on stderr, exit code 2."""
    parser: argparse.ArgumentParser = args.parser
    parser.error(message)


def _state(state: str, what: str) -> Callable[[Kube, argparse.Namespace], int]:
    def run(k: Kube, args: argparse.Namespace) -> int:
        kind, name = args.target
        obj = k.merge_patch(kind, name, {"spec": {"state": state}})
        _done(obj, kind, what, args.output)
        return 0
    return run


def _restart(k: Kube, args: argparse.Namespace) -> int:
    kind, name = args.target
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = k.merge_patch(kind, name, {"metadata": {"annotations": {A_RESTARTED_AT: now}}})
    _done(obj, kind, "restarted", args.output)
    return 0


def _register(k: Kube, args: argparse.Namespace) -> int:
    kind, name = args.target
    obj = k.merge_patch(kind, name, {"spec": {"lifecycle": "Registered"}})
    _done(obj, kind, "registered", args.output)
    return 0


def _promote(k: Kube, args: argparse.Namespace) -> int:
    _, name = args.target
    spec: Obj = {"workloadRef": {"name": name}}
    if args.importance:
        spec["importance"] = args.importance
    if args.replicas is not None:
        spec["replicas"] = args.replicas
    body = {"apiVersion": API_VERSION, "kind": "Deployment", "metadata": {"name": args.deployment_name},
            "spec": spec}
    obj = k.create(DEPLOYMENTS, body)
    art = ((obj.get("spec") or {}).get("artifactRef") or {}).get("name")
    _done(obj, "deployment", "created", args.output,
          f" from workload {name}" + (f" (artifact {art})" if art else ""))
    return 0


def _decide(decision: str) -> Callable[[Kube, argparse.Namespace], int]:
    def run(k: Kube, args: argparse.Namespace) -> int:
        kind, name = args.target
        generation = args.generation or int(k.get(kind, name)["metadata"]["generation"])
        spec: Obj = {"deploymentRef": {"name": name}, "generation": generation, "decision": decision,
                     "deletion": bool(args.deletion)}
        if args.comment:
            spec["comment"] = args.comment
        body = {"apiVersion": API_VERSION, "kind": "Approval",
                "metadata": {"generateName": f"{name[:40]}-{generation}-"}, "spec": spec}
        obj = k.create(APPROVALS, body)
        what = "deletion" if args.deletion else f"generation {generation}"
        _done(obj, "approval", "created", args.output,
              f": {decision} of deployment.{GROUP}/{name} ({what})")
        return 0
    return run


HISTORY_COLUMNS = ("TIME", "GENERATION", "ACTION", "ACTOR", "ARTIFACT", "VERSION", "DIGEST", "REPLICAS",
                   "IMPORTANCE", "MESSAGE")
ROLLOUTS = ("Created", "ArtifactSwitched", "RolledBack")  # kiln.api.models.HistoryAction: what ran


def _rollback(k: Kube, args: argparse.Namespace) -> int:
    """Switch a governed Deployment back to the Artifact it ran before the current one (or to a version of
    its collection): by collection and version when its spec names the Artifact that way, else by name and
    uid. Governance applies as to any switch."""
    kind, name = args.target
    dep = k.get(kind, name)
    ref, running = (dep.get("spec") or {}).get("artifactRef") or {}, (dep.get("status") or {}).get("artifact") or {}
    collection = ref.get("collection") or running.get("collection")
    if args.to_version is not None:
        if not collection:
            return _fail(f"error: deployment.{GROUP}/{name} runs Artifact {running.get('name')}, which has no "
                         "collection: --to-version needs one")
        target: Obj = {"name": None, "uid": None, "collection": collection, "version": args.to_version}
    else:
        history = [h for h in (dep.get("status") or {}).get("history") or [] if h.get("action") in ROLLOUTS]
        before = next((h for h in reversed(history) if h.get("artifactUid") != running.get("uid")
                       or h.get("digest") != running.get("specDigest")), None)
        if before is None:
            return _fail(f"error: deployment.{GROUP}/{name} has run no other Artifact: nothing to roll back to")
        if ref.get("collection") and before.get("version"):
            target = {"name": None, "uid": before.get("artifactUid"), "collection": ref["collection"],
                      "version": before["version"]}
        else:
            target = {"name": before.get("artifact"), "uid": before.get("artifactUid"), "collection": None,
                      "version": None}
    obj = k.merge_patch(kind, name, {"spec": {"artifactRef": target}})
    what = f"version {target['version']} of {target['collection']}" if target["collection"] else \
        f"artifact {target['name']}"
    _done(obj, kind, "rolled back", args.output, f" to {what} (kubectl kiln history deployment {name})")
    return 0


def _short_digest(digest: str | None) -> str:
    if not digest:
        return "-"
    algo, _, hexa = digest.partition(":")
    return f"{algo}:{hexa[:12]}" if hexa else digest[:19]


def _history(k: Kube, args: argparse.Namespace) -> int:
    kind, name = args.target
    entries = list((k.get(kind, name).get("status") or {}).get("history") or [])
    if args.output:
        _dump(entries, args.output)
        return 0
    if not entries:
        print(f"No history for deployment.{GROUP}/{name} yet.", file=sys.stderr)
        return 0

    def cell(value: Any) -> str:
        return "-" if value is None or value == "" else str(value)

    rows = [[cell(h.get("time")), cell(h.get("generation")), cell(h.get("action")), cell(h.get("actor")),
             cell(h.get("artifact")), cell(h.get("version")), _short_digest(h.get("digest")), cell(h.get("replicas")),
             cell(h.get("importance")), cell(h.get("message"))] for h in entries]
    print(_table(HISTORY_COLUMNS, rows))
    return 0


# --- create / update: the tutorial's steps 1, 2a and 2b -------------------------------------------------

# The kinds a manifest (-f FILE) may hold: Kiln's own, by their kind.
MANIFEST_KINDS = {"Artifact": ARTIFACTS, "Workload": WORKLOADS, "Deployment": DEPLOYMENTS, "Approval": APPROVALS,
                  "ApprovalPolicy": APPROVAL_POLICIES}
UPDATE_POLICIES = ("Automatic", "Manual")  # kiln.api.models.UpdatePolicy
PRIMARY_PORT_NAME = "http"


def _port_number(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {n}")
    return n


def _words(value: str) -> list[str]:
    """--command / --args: a JSON list (``'["python", "-m", "app"]'``) or words split as a shell does."""
    import shlex

    if value.lstrip().startswith("["):
        try:
            words = json.loads(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"not a JSON list: {e}") from None
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise argparse.ArgumentTypeError("a JSON list of strings")
        return list(words)
    try:
        return shlex.split(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _env_pairs(args: argparse.Namespace, removable: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """``--env K=V`` (set) and, when ``removable``, ``--env K-`` (remove), in order."""
    sets: list[tuple[str, str]] = []
    removes: list[str] = []
    for item in args.env or []:
        key, eq, value = item.partition("=")
        if eq and key:
            sets.append((key, value))
        elif removable and not eq and item.endswith("-") and len(item) > 1:
            removes.append(item[:-1])
        else:
            _usage(args, f"--env {item!r}: NAME=VALUE" + (" (or NAME- to remove it)" if removable else ""))
    return sets, removes


def _quantities(args: argparse.Namespace, flag: str, value: str | None) -> dict[str, str]:
    """``--requests cpu=100m,memory=128Mi``, as kubectl set resources takes it."""
    out: dict[str, str] = {}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        key, eq, amount = item.strip().partition("=")
        if not (eq and key and amount):
            _usage(args, f"{flag} {value!r}: RESOURCE=AMOUNT[,RESOURCE=AMOUNT...], e.g. cpu=100m,memory=128Mi")
        out[key] = amount
    return out


def _port_entries(ports: Sequence[int], existing: Sequence[Obj] = ()) -> list[Obj]:
    """Container ports: the first named http, the others p<port>; a port already declared keeps its name."""
    named = {p.get("containerPort"): p for p in existing}
    out: list[Obj] = []
    for i, port in enumerate(dict.fromkeys(ports)):
        old = named.get(port)
        if old is not None:
            out.append(dict(old))
        else:
            out.append({"name": PRIMARY_PORT_NAME if i == 0 else f"p{port}", "containerPort": port})
    taken: set[str] = set()
    for p in out:  # names stay unique (one may have been kept from before)
        if p.get("name") in taken:
            p["name"] = f"p{p['containerPort']}"
        taken.add(str(p.get("name")))
    return out


def _probe(old: Obj | None, path: str, port: Any) -> Obj:
    """An HTTP GET probe of ``path`` on ``port``, keeping the timing of the probe it replaces."""
    probe = {k: v for k, v in (old or {}).items() if k not in ("httpGet", "tcpSocket", "exec", "grpc")}
    get = dict((old or {}).get("httpGet") or {})
    get.update({"path": path, "port": get.get("port", port) if (old or {}).get("httpGet") else port})
    return {"httpGet": get, **probe}


def _container_changes(args: argparse.Namespace) -> bool:
    return any(getattr(args, f, None) is not None for f in (
        "image", "port", "env", "entrypoint", "args", "readiness_path", "liveness_path", "requests", "limits"))


def _edit_container(args: argparse.Namespace, c: Obj) -> Obj:
    """The container with the flags' changes (a copy); Failed when the change cannot be made."""
    c = json.loads(json.dumps(c))
    if args.image:
        c["image"] = args.image
    if args.port:
        c["ports"] = _port_entries(args.port, c.get("ports") or [])
    for field, value in (("command", args.entrypoint), ("args", args.args)):
        if value is not None:
            if value:
                c[field] = value
            else:
                c.pop(field, None)
    sets, removes = _env_pairs(args, removable=True)
    if sets or removes:
        env = [e for e in c.get("env") or [] if e.get("name") not in removes]
        for key, value in sets:
            entry = next((e for e in env if e.get("name") == key), None)
            if entry is None:
                env.append({"name": key, "value": value})
            else:
                entry.pop("valueFrom", None)
                entry["value"] = value
        if env:
            c["env"] = env
        else:
            c.pop("env", None)
    for field, flag in (("requests", "--requests"), ("limits", "--limits")):
        amounts = _quantities(args, flag, getattr(args, field))
        if amounts:
            c.setdefault("resources", {}).setdefault(field, {}).update(amounts)
    for field, path in (("readinessProbe", args.readiness_path), ("livenessProbe", args.liveness_path)):
        if path is None:
            continue
        if not path:
            c.pop(field, None)
            continue
        ports = c.get("ports") or []
        if not ports:
            raise Failed(f"error: --{field[:-5].lower()}-path: container {c.get('name')!r} declares no port to probe")
        c[field] = _probe(c.get(field), path, ports[0].get("name") or ports[0]["containerPort"])
    return c


def _read_manifests(args: argparse.Namespace) -> list[Obj]:
    """The objects of ``-f FILE`` (``-``: stdin), YAML or JSON, one or more documents or a List."""
    import yaml

    source = args.filename
    try:
        text = sys.stdin.read() if source == "-" else open(source).read()  # noqa: SIM115
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as e:
        raise Failed(f"error: the path {source!r} cannot be read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise Failed(f"error: {source}: not YAML or JSON: {e}") from None
    objs: list[Obj] = []
    for d in docs:
        objs += d.get("items") or [] if isinstance(d, dict) and d.get("kind") == "List" else [d]
    if not objs:
        raise Failed(f"error: no objects passed to {args.command} ({source})")
    for o in objs:
        if not isinstance(o, dict) or o.get("apiVersion") != API_VERSION or o.get("kind") not in MANIFEST_KINDS:
            what = f"{o.get('kind')} ({o.get('apiVersion')})" if isinstance(o, dict) else repr(o)[:60]
            raise Failed(f"error: {source}: {what} is not a Kiln object: `kubectl kiln {args.command} -f` takes "
                         f"{API_VERSION} {', '.join(MANIFEST_KINDS)}; use kubectl for the rest")
        if not (o.get("metadata") or {}).get("name") and not (
                args.command == "create" and (o.get("metadata") or {}).get("generateName")):
            raise Failed(f"error: {source}: a {o['kind']} without metadata.name")
    return objs


def _manifest_namespace(k: Kube, args: argparse.Namespace, obj: Obj) -> str:
    """The object's namespace: its own, which must agree with -n when both are given (as kubectl)."""
    own = (obj.get("metadata") or {}).get("namespace")
    if own and getattr(args, "namespace", None) and own != args.namespace:
        raise Failed(f'error: the namespace from the provided object "{own}" does not match the namespace '
                     f'"{args.namespace}". You must pass \'--namespace={own}\' to perform this operation.')
    return str(own or k.namespace)


def _from_manifests(k: Kube, args: argparse.Namespace, write: Callable[[str, str, Obj], Obj], what: str) -> int:
    """Each object of -f FILE written (created or replaced) in turn; as kubectl, the others go on after a
    refusal, which is printed, and the exit code is 1."""
    from kubernetes.client.exceptions import ApiException

    failed = False
    for obj in _read_manifests(args):
        try:
            out = write(_manifest_namespace(k, args, obj), MANIFEST_KINDS[obj["kind"]], obj)
        except ApiException as e:
            print(_api_message(e), file=sys.stderr)
            failed = True
            continue
        _done(out, str(obj["kind"]).lower(), what, args.output)
    return 1 if failed else 0


def _prepare_create(args: argparse.Namespace) -> None:
    """Usage errors of create, before any API call; the Workload to create in ``args.body``."""
    fields = ("image", "port", "env", "entrypoint", "args", "replicas", "update_policy", "description",
              "display_name", "readiness_path", "liveness_path", "requests", "limits")
    given = [f"--{f.replace('_', '-')}".replace("entrypoint", "command") for f in fields
             if getattr(args, f, None) is not None]
    if args.filename:
        if args.kind or given:
            _usage(args, f"-f FILE holds the objects: no KIND NAME, nor {' '.join(given) or 'other options'}")
        return
    if not args.kind:
        _usage(args, f"what to create? {args.parser.prog} workload NAME --image IMAGE, or -f FILE")
    _, name = args.target = _target(args, ["workload"])
    if not args.image:
        _usage(args, f"--image is required: the image of the workload's container ({args.parser.prog} "
                     f"workload {name} --image IMAGE)")
    sets, _ = _env_pairs(args, removable=False)
    c: Obj = {"name": "app", "image": args.image}
    if args.entrypoint:
        c["command"] = args.entrypoint
    if args.args:
        c["args"] = args.args
    if sets:
        c["env"] = [{"name": k, "value": v} for k, v in dict(sets).items()]
    if args.port:
        c["ports"] = _port_entries(args.port)
    resources = {f: q for f in ("requests", "limits") if (q := _quantities(args, f"--{f}", getattr(args, f)))}
    if resources:
        c["resources"] = resources
    for field, path in (("readinessProbe", args.readiness_path), ("livenessProbe", args.liveness_path)):
        if path:
            if not args.port:
                _usage(args, f"--{field[:-5].lower()}-path needs a --port to probe")
            c[field] = _probe(None, path, PRIMARY_PORT_NAME)
    artifact: Obj = {}
    if args.display_name is not None:
        artifact["displayName"] = args.display_name
    if args.description is not None:
        artifact["description"] = args.description
    spec: Obj = {"artifact": {**artifact, "containers": [c]}}
    if args.replicas is not None:
        spec["replicas"] = args.replicas
    if args.update_policy:
        spec["updatePolicy"] = args.update_policy
    args.body = {"apiVersion": API_VERSION, "kind": "Workload", "metadata": {"name": name}, "spec": spec}


def _create(k: Kube, args: argparse.Namespace) -> int:
    if args.filename:
        return _from_manifests(k, args, lambda ns, plural, obj: k.create(plural, obj, ns), "created")
    obj = k.create(WORKLOADS, args.body)
    _done(obj, "workload", "created", args.output,
          f" (its Draft artifact: artifact.{GROUP}/{obj['metadata']['name']})")
    return 0


def _prepare_update(args: argparse.Namespace) -> None:
    """Usage errors of update, before any API call."""
    containers = _container_changes(args) or args.container is not None
    if args.filename:
        if args.kind or containers or args.description is not None or args.display_name is not None:
            _usage(args, "-f FILE replaces the objects it holds: no KIND NAME, nor other options")
        return
    if not args.kind:
        _usage(args, f"what to update? {args.parser.prog} artifact NAME [options], or -f FILE")
    args.target = _target(args, ["artifact"])
    if not containers and args.description is None and args.display_name is None:
        _usage(args, "nothing to change: give --description, --display-name or a container's field (--image, "
                     "--port, --env, --command, --args, --readiness-path, --liveness-path, --requests, --limits)")
    if containers and not _container_changes(args):
        _usage(args, "--container names the container to change: give a change too (--image, --env, ...)")
    _env_pairs(args, removable=True)
    for f in ("requests", "limits"):
        _quantities(args, f"--{f}", getattr(args, f))


def _replace(k: Kube, ns: str, plural: str, obj: Obj) -> Obj:
    """kubectl replace: a PUT of the whole object, at the resourceVersion it names or else the current one."""
    obj = json.loads(json.dumps(obj))
    meta = obj.setdefault("metadata", {})
    if not meta.get("resourceVersion"):
        current = k.custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, meta["name"])
        meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    return dict(k.custom.replace_namespaced_custom_object(GROUP, VERSION, ns, plural, meta["name"], obj))


def _update(k: Kube, args: argparse.Namespace) -> int:
    if args.filename:
        return _from_manifests(k, args, lambda ns, plural, obj: _replace(k, ns, plural, obj), "replaced")
    kind, name = args.target
    spec: Obj = {}
    if args.display_name is not None:
        spec["displayName"] = args.display_name or None  # "": removed
    if args.description is not None:
        spec["description"] = args.description or None
    body: Obj = {"spec": spec}
    if _container_changes(args):
        current = k.get(kind, name)
        containers = list((current.get("spec") or {}).get("containers") or [])
        index = 0
        if args.container is not None:
            index = next((i for i, c in enumerate(containers) if c.get("name") == args.container), -1)
            if index < 0:
                have = ", ".join(str(c.get("name")) for c in containers)
                raise Failed(f"error: artifact.{GROUP}/{name} has no container {args.container!r} (it has {have})")
        elif not containers:
            raise Failed(f"error: artifact.{GROUP}/{name} has no containers")
        containers[index] = _edit_container(args, containers[index])
        spec["containers"] = containers
        # The list is replaced whole (a merge patch replaces lists); the resourceVersion read makes it
        # conditional: a change made in between is a Conflict, not lost.
        body["metadata"] = {"resourceVersion": current["metadata"]["resourceVersion"]}
    obj = k.merge_patch(kind, name, body)
    _done(obj, kind, "patched", args.output)
    return 0


# --- get: the tree of an artifact -------------------------------------------------------------------


def _condition(obj: Obj, type_: str = "Ready") -> Obj:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _runs(wl: Obj, artifact: str) -> bool:
    spec = wl.get("spec") or {}
    if spec.get("artifactRef"):
        return bool(spec["artifactRef"].get("name") == artifact)
    return spec.get("artifact") is not None and wl["metadata"]["name"] == artifact


def _collect(k: Kube, name: str) -> Obj:
    """The artifact, the workloads running it with their pods, the Deployments built from it with theirs."""
    art = k.get_or_none("artifact", name)
    workloads = sorted((w for w in k.items(WORKLOADS) if _runs(w, name)), key=lambda o: o["metadata"]["name"])
    deployments = sorted((d for d in k.items(DEPLOYMENTS)
                          if ((d.get("spec") or {}).get("artifactRef") or {}).get("name") == name),
                         key=lambda o: o["metadata"]["name"])
    wl_pods = k.pods(L_WORKLOAD, [w["metadata"]["name"] for w in workloads])
    dep_pods = k.pods(L_DEPLOYMENT, [d["metadata"]["name"] for d in deployments])

    def pods_of(pods: list[Obj], label: str, owner: str) -> list[Obj]:
        return sorted((p for p in pods if (p["metadata"].get("labels") or {}).get(label) == owner),
                      key=lambda o: o["metadata"]["name"])

    return {"artifact": art,
            "workloads": [{"workload": w, "pods": pods_of(wl_pods, L_WORKLOAD, w["metadata"]["name"])}
                          for w in workloads],
            "deployments": [{"deployment": d, "pods": pods_of(dep_pods, L_DEPLOYMENT, d["metadata"]["name"])}
                            for d in deployments]}


def _fingerprint(tree: Obj) -> list[tuple[str, str]]:
    objs = [tree["artifact"]] if tree["artifact"] else []
    for key in ("workloads", "deployments"):
        for branch in tree[key]:
            objs += [branch[key[:-1]], *branch["pods"]]
    return [(o["metadata"]["uid"], o["metadata"]["resourceVersion"]) for o in objs]


def _pod_row(p: Obj) -> tuple[str, str, str]:
    st = p.get("status") or {}
    ready = _condition(p)
    statuses = st.get("containerStatuses") or []
    waiting = next((c["state"]["waiting"].get("reason") for c in statuses
                    if (c.get("state") or {}).get("waiting")), None)
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    n_ready = sum(1 for c in statuses if c.get("ready"))
    phase = "Terminating" if p["metadata"].get("deletionTimestamp") else st.get("phase", "-")
    detail = f"{phase} {n_ready}/{len(p['spec'].get('containers') or [])}"
    if restarts:
        detail += f", {restarts} restart(s)"
    return ready.get("status", "-"), waiting or ready.get("reason") or "", detail


def _rows(tree: Obj, name: str) -> list[list[str]]:
    rows: list[list[str]] = []
    art = tree["artifact"]
    if art:
        st = art.get("status") or {}
        c = _condition(art)
        detail = (art.get("spec") or {}).get("lifecycle", "Draft")
        if st.get("specDigest"):
            detail += f" {_short_digest(st['specDigest'])}"
        if st.get("registeredBy"):
            detail += f" by {st['registeredBy']}"
        rows.append([f"Artifact/{name}", c.get("status", "-"), c.get("reason", ""), detail,
                     _age(art["metadata"].get("creationTimestamp")), c.get("message", "")])
    else:
        rows.append([f"Artifact/{name}", "-", "NotFound", "-", "-", f"artifacts.{GROUP} {name!r} not found"])

    children: list[tuple[str, Obj, list[Obj]]] = [("Workload", b["workload"], b["pods"]) for b in tree["workloads"]]
    children += [("Deployment", b["deployment"], b["pods"]) for b in tree["deployments"]]
    for i, (kind, obj, pods) in enumerate(children):
        last = i == len(children) - 1
        st = obj.get("status") or {}
        spec = obj.get("spec") or {}
        c = _condition(obj)
        replicas = f"{st.get('readyReplicas') or 0}/{spec.get('replicas', 1)}"
        if kind == "Workload":
            detail = f"{st.get('state') or spec.get('state') or '-'} {replicas}"
        else:
            approved = _condition(obj, "Approved")
            detail = f"{spec.get('importance', 'Moderate')} {replicas}"
            if approved:
                detail += f", Approved={approved.get('reason') or approved.get('status')}"
        message = c.get("message", "") if c.get("status") != "True" else ""
        rows.append([f"{'└─' if last else '├─'}{kind}/{obj['metadata']['name']}", c.get("status", "-"),
                     c.get("reason", ""), detail, _age(obj["metadata"].get("creationTimestamp")), message])
        for j, p in enumerate(pods):
            ready, reason, detail = _pod_row(p)
            branch = "  " if last else "│ "
            rows.append([f"{branch}{'└─' if j == len(pods) - 1 else '├─'}Pod/{p['metadata']['name']}", ready,
                         reason, detail, _age(p["metadata"].get("creationTimestamp")), ""])
    return rows


def _render(tree: Obj, name: str) -> str:
    header = ("NAME", "READY", "REASON", "STATUS", "AGE", "MESSAGE")
    return _table(header, _rows(tree, name), _paint_ready(1) if _use_colour() else None)


def _get(k: Kube, args: argparse.Namespace) -> int:
    name = args.name
    if not args.watch:
        tree = _collect(k, name)
        if tree["artifact"] is None and not tree["workloads"] and not tree["deployments"]:
            raise Failed(f'Error from server (NotFound): artifacts.{GROUP} "{name}" not found')
        if args.output:
            _dump(tree, args.output)
        else:
            print(_render(tree, name))
        return 0
    from kubernetes.client.exceptions import ApiException

    last: list[tuple[str, str]] | None = None
    tty = sys.stdout.isatty()
    try:
        while True:
            try:
                tree = _collect(k, name)
            except ApiException as e:  # a passing error: say it, keep watching
                print(_api_message(e), file=sys.stderr, flush=True)
            else:
                fingerprint = _fingerprint(tree)
                if fingerprint != last:
                    last = fingerprint
                    if args.output == "json":
                        print(json.dumps(tree), flush=True)
                    elif args.output:
                        _dump(tree, "yaml")
                        print("---", flush=True)
                    else:
                        if tty:
                            sys.stdout.write("\033[H\033[2J")
                        stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
                        print(_render(tree, name) + ("" if tty else f"\n# {stamp}") + "\n", flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


# --- call: one HTTP request through kubectl port-forward ----------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubectl() -> str:
    exe = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not exe:
        raise Failed("error: kubectl is not on PATH (or set KUBECTL): `call` runs kubectl port-forward")
    return exe


@contextmanager
def _port_forward(k: Kube, service: str, port: int, timeout: float = 30.0) -> Iterator[int]:
    """``kubectl port-forward service/NAME LOCAL:PORT`` on 127.0.0.1; yields the local port once it
    forwards, stops it (by its pid) at the end."""
    kubectl = _kubectl()
    err = ""
    for _attempt in range(3):  # a free port may be taken before kubectl binds it
        local = _free_port()
        proc = subprocess.Popen([kubectl, *k.flags(), "port-forward", "--address=127.0.0.1", f"service/{service}",
                                 f"{local}:{port}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        forwarding = threading.Event()
        errors: list[str] = []

        def read(stream: Any, into: list[str] | None, event: threading.Event) -> None:
            for line in stream:
                if into is not None:
                    into.append(line)
                elif "Forwarding from" in line:
                    event.set()

        threads = [threading.Thread(target=read, args=(proc.stdout, None, forwarding), daemon=True),
                   threading.Thread(target=read, args=(proc.stderr, errors, forwarding), daemon=True)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + timeout
            while not forwarding.is_set() and proc.poll() is None and time.monotonic() < deadline:
                forwarding.wait(0.05)
            if forwarding.is_set() and proc.poll() is None:
                yield local
                return
            if proc.poll() is None:
                raise Failed(f"error: kubectl port-forward to service/{service} did not start within {timeout:.0f}s")
            proc.wait()
            for t in threads:
                t.join(timeout=1)
            err = "".join(errors).strip()
            if "address already in use" not in err:
                raise Failed(err or f"error: kubectl port-forward exited with {proc.returncode}")
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    raise Failed(err)


def _request_body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data.startswith("@"):
        source = data[1:]
        try:
            data = sys.stdin.read() if source == "-" else open(source).read()  # noqa: SIM115
        except OSError as e:
            raise Failed(f"error: --data {data[:60]}: {e}") from None
    try:
        json.loads(data)
    except ValueError as e:
        raise Failed(f"error: --data is not JSON: {e}") from None
    return data.encode()


def _call(k: Kube, args: argparse.Namespace) -> int:
    kind, name = args.target
    body = _request_body(args.data)
    service = f"{name}{DEV_SERVICE_SUFFIX}" if kind == "workload" else name
    svc: Any = k.core.read_namespaced_service(service, k.namespace)
    ports = svc.spec.ports or []
    port = args.port or (ports[0].port if ports else None)
    if not port:
        raise Failed(f"error: service/{service} has no ports")
    path = args.path if args.path.startswith("/") else f"/{args.path}"
    with _port_forward(k, service, int(port)) as local:
        url = f"http://127.0.0.1:{local}{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"} if body is not None else {}
        req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=args.timeout) as r:
                text = r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            print(text, end="" if text.endswith("\n") else "\n")
            raise Failed(f"error: {req.method} {path} on service/{service}:{port}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            raise Failed(f"error: {req.method} {path} on service/{service}:{port}: {e}") from None
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


# --------------------------------------------------------------------------------------------------
# Completion
# --------------------------------------------------------------------------------------------------

BASH = r"""# bash completion for kubectl-kiln (kubectl kiln completes through kubectl_complete-kiln)
# source <(kubectl-kiln completion bash)
_kubectl_kiln() {
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null)" \
        -- "${COMP_WORDS[COMP_CWORD]}"))
}
complete -o default -F _kubectl_kiln kubectl-kiln
"""

ZSH = r"""#compdef kubectl-kiln
# zsh completion for kubectl-kiln (kubectl kiln completes through kubectl_complete-kiln)
# source <(kubectl-kiln completion zsh)
_kubectl_kiln() {
    local -a candidates
    candidates=("${(@f)$(${words[1]} __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    compadd -a candidates
}
compdef _kubectl_kiln kubectl-kiln
"""

# The positionals of each verb: the kinds it takes, then a name of that kind ("" : an artifact name).
POSITIONALS: dict[str, list[str]] = {
    "stop": ["workload"], "start": ["workload"], "restart": ["workload"], "register": ["artifact"],
    "promote": ["workload"], "approve": ["deployment"], "reject": ["deployment"], "history": ["deployment"],
    "call": ["workload", "deployment"], "create": ["workload"], "update": ["artifact"],
}


def _option_values(parser: argparse.ArgumentParser, flag: str, done: list[str]) -> list[str]:
    choices = next((a.choices for a in parser._actions if flag in a.option_strings and a.choices), None)
    if choices:
        return [str(c) for c in choices]
    if flag in ("-n", "--namespace"):
        return _names(done, None)
    if flag == "--context":
        try:
            from kubernetes import config

            cfg: Any = config
            contexts, _ = cfg.list_kube_config_contexts(config_file=_flag(done, "--kubeconfig"))
            return [c["name"] for c in contexts]
        except Exception:
            return []
    return []


def _flag(words: list[str], *names: str) -> str | None:
    value = None
    for i, w in enumerate(words):
        for n in names:
            if w == n and i + 1 < len(words):
                value = words[i + 1]
            elif w.startswith(f"{n}="):
                value = w.split("=", 1)[1]
    return value


def _names(done: list[str], kind: str | None) -> list[str]:
    """Names of objects of ``kind`` (None: namespaces), read with the user's credentials; nothing on error."""
    ns = argparse.Namespace(kubeconfig=_flag(done, "--kubeconfig"), context=_flag(done, "--context"),
                            namespace=_flag(done, "-n", "--namespace"), as_user=_flag(done, "--as"),
                            as_group=None)
    try:
        k = Kube(ns)
        if kind is None:
            r = k.core.list_namespace(_request_timeout=3, _preload_content=False)
        else:
            r = k.custom.list_namespaced_custom_object(GROUP, VERSION, k.namespace, PLURALS[kind],
                                                       _request_timeout=3, _preload_content=False)
        return [o["metadata"]["name"] for o in json.loads(r.data)["items"]]
    except Exception:
        return []


def complete(words: list[str]) -> list[str]:
    """Candidates for the last of ``words`` (the arguments after the program, the last one being typed)."""
    parser, verbs = build_parser()
    *done, cur = words or [""]
    positionals: list[str] = []
    verb_parser = parser
    expect_value = False
    for w in done:
        if expect_value:
            expect_value = False
            continue
        if w.startswith("-") and len(w) > 1:
            expect_value = "=" not in w and w in _value_options(parser) | _value_options(verb_parser)
            continue
        positionals.append(w)
        if len(positionals) == 1 and w in verbs:
            verb_parser = verbs[w]
    if expect_value:
        return _prefixed(_option_values(verb_parser, done[-1], done), cur)
    if cur.startswith("-"):
        options = [o for a in verb_parser._actions for o in a.option_strings if o.startswith("--")]
        return _prefixed(options, cur)
    if not positionals:
        return _prefixed([v for v in verbs if not v.startswith("_")], cur)
    verb, rest = positionals[0], positionals[1:]
    if verb == "completion":
        return _prefixed(["bash", "zsh"], cur) if not rest else []
    if verb == "get":
        return _prefixed(_names(done, "artifact"), cur) if not rest else []
    kinds = POSITIONALS.get(verb)
    if not kinds:
        return []
    if not rest:
        return _prefixed(kinds, cur)
    if len(rest) == 1:
        kind = next((k for k in kinds if rest[0].lower() in KINDS[k]), None)
        return _prefixed(_names(done, kind), cur) if kind else []
    return []


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if a.nargs != 0 for o in a.option_strings}


def _prefixed(candidates: list[str], cur: str) -> list[str]:
    return [c for c in candidates if c.startswith(cur)]


def kubectl_complete(argv: list[str] | None = None) -> int:
    """``kubectl_complete-kiln``: kubectl's plugin completion (Cobra's __complete protocol: the candidates,
    one a line, then ``:4``, no file completion, or ``:0`` after ``-f``: the shell completes a file)."""
    words = list(sys.argv[1:] if argv is None else argv)
    for c in complete(words):
        print(c)
    # -f FILE: the shell's file completion (ShellCompDirectiveDefault); else none (NoFileComp).
    print(":0" if words[-2:-1] in (["-f"], ["--filename"]) else ":4")
    return 0


def _completion(args: argparse.Namespace) -> int:
    print(BASH if args.shell == "bash" else ZSH, end="")
    return 0


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------

PATCH = f"kubectl patch workload.{GROUP} NAME --type merge -p"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    connection = argparse.ArgumentParser(add_help=False)
    g = connection.add_argument_group("kubectl options")
    g.add_argument("-n", "--namespace", default=argparse.SUPPRESS,
                   help="the namespace (default: the kubeconfig context's, else default)")
    g.add_argument("--context", default=argparse.SUPPRESS, help="the kubeconfig context to use")
    g.add_argument("--kubeconfig", default=argparse.SUPPRESS,
                   help="path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    g.add_argument("--as", dest="as_user", default=argparse.SUPPRESS, metavar="USER",
                   help="impersonate this user, as kubectl --as (needs the verb impersonate)")
    g.add_argument("--as-group", action="append", default=argparse.SUPPRESS, metavar="GROUP",
                   help="impersonate this group, as kubectl --as-group (one group)")

    parser = argparse.ArgumentParser(
        prog=PROG, parents=[connection], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Kiln's day-to-day verbs. Each makes the API call its --help names, as you: your RBAC "
                    "rights apply and the audit log records you.",
        epilog="Exit codes: 0 done, 1 refused or failed (the API server's message printed), 2 usage error.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    verbs: dict[str, argparse.ArgumentParser] = {}

    def verb(name: str, summary: str, same_as: str, func: Callable[[Kube, argparse.Namespace], int] | None,
             kinds: str | None = None, output: Sequence[str] = ("json", "yaml", "name")) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[connection], help=summary,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description=f"{summary}\n\nsame as:\n  {same_as}")
        if kinds:
            p.add_argument("kind", metavar=kinds, help="the kind (or KIND/NAME)")
            p.add_argument("name", nargs="?", metavar="NAME", help="the object's name")
        if output:
            p.add_argument("-o", "--output", choices=list(output), default=None,
                           help=f"print the result as {' or '.join(output)}")
        p.set_defaults(func=func, parser=p, allowed=kinds.split("|") if kinds else None)
        verbs[name] = p
        return p

    def container_options(p: argparse.ArgumentParser, update: bool) -> None:
        g = p.add_argument_group("the container" + (" (the first, or --container)" if update else " (named app)"))
        if update:
            g.add_argument("-c", "--container", metavar="NAME", help="the container to change (default: the first)")
        g.add_argument("--image", metavar="IMAGE", help="the container's image" + ("" if update else " (required)"))
        g.add_argument("--port", type=_port_number, action="append", metavar="N",
                       help="a port it listens on (repeatable; the first named http, the others p<N>)"
                            + ("; replaces its ports, a port it had keeps its name" if update else ""))
        g.add_argument("--env", action="append", metavar="NAME=VALUE",
                       help="an environment variable (repeatable)" + ("; NAME- removes it" if update else ""))
        g.add_argument("--command", dest="entrypoint", type=_words, metavar="CMD",
                       help="the entrypoint, words split as a shell does or a JSON list" + ("; '' removes it"
                                                                                           if update else ""))
        g.add_argument("--args", type=_words, metavar="ARGS",
                       help="the entrypoint's arguments, likewise (--args='--port 8080')"
                            + ("; '' removes them" if update else ""))
        kept = " (its other settings kept; '' removes it)" if update else ""
        g.add_argument("--readiness-path", metavar="PATH",
                       help=f"readiness probe: HTTP GET of PATH on the first port{kept}")
        g.add_argument("--liveness-path", metavar="PATH", help="liveness probe, likewise")
        g.add_argument("--requests", metavar="R=Q,...", help="resource requests, e.g. cpu=100m,memory=128Mi"
                                                             + (" (merged into its own)" if update else ""))
        g.add_argument("--limits", metavar="R=Q,...", help="resource limits, e.g. memory=256Mi")

    p = verb("create", "create a Workload with an inline artifact, one container named app: Kiln creates its "
                       "Draft Artifact NAME and runs it (workload NAME --image IMAGE [options]); or, with -f FILE, "
                       "the Kiln objects of a manifest",
             f"kubectl create -f - <<EOF\n  apiVersion: {API_VERSION}\n  kind: Workload\n  metadata: {{name: NAME}}\n"
             "  spec:\n    replicas: N\n    updatePolicy: Automatic\n"
             "    artifact:\n      displayName: TEXT\n      description: TEXT\n      containers:\n"
             "      - name: app\n        image: IMAGE\n        ports: [{name: http, containerPort: N}]\n"
             "        env: [{name: K, value: V}]\n        command: [...]\n        args: [...]\n"
             "        readinessProbe: {httpGet: {path: PATH, port: http}}\n  EOF\n"
             "  kubectl create -f FILE   # with -f FILE", _create, None)
    p.add_argument("kind", nargs="?", metavar="workload", help="the kind: workload (or workload/NAME)")
    p.add_argument("name", nargs="?", metavar="NAME", help="the Workload's name (its Artifact's too)")
    p.add_argument("-f", "--filename", metavar="FILE", help="create the objects of this manifest (-: stdin)")
    p.add_argument("--replicas", type=int, metavar="N", help="pods to run (default 1)")
    p.add_argument("--update-policy", choices=UPDATE_POLICIES,
                   help="Automatic (default: a change of the artifact restarts the pods) or Manual")
    p.add_argument("--display-name", metavar="TEXT", help="the artifact's spec.displayName")
    p.add_argument("--description", metavar="TEXT", help="the artifact's spec.description")
    container_options(p, update=False)
    p.set_defaults(prepare=_prepare_create)

    p = verb("update", "change an Artifact (artifact NAME [options]): --description/--display-name are metadata, "
                       "editable even once Registered, and restart nothing; a container's fields (--image, --port, "
                       "--env, ...) change its spec.containers, and the Workloads running a Draft restart onto it "
                       "(a Registered artifact's are locked: the API server refuses). -f FILE replaces the objects "
                       "of a manifest whole",
             f"kubectl patch artifact.{GROUP} NAME --type merge -p '{{\"spec\":{{\"description\":\"TEXT\","
             "\"displayName\":\"TEXT\"}}'   # metadata\n"
             f"  kubectl get artifact.{GROUP} NAME -o json   # its spec.containers and metadata.resourceVersion RV\n"
             f"  kubectl patch artifact.{GROUP} NAME --type merge -p "
             "'{\"metadata\":{\"resourceVersion\":\"RV\"},\"spec\":{\"containers\":[...]}}'\n"
             "  # a merge patch replaces a list whole: spec.containers is sent complete, the first container (or\n"
             "  # --container) changed; the resourceVersion makes a change made in between a Conflict, not lost\n"
             "  kubectl replace -f FILE   # with -f FILE", _update, None)
    p.add_argument("kind", nargs="?", metavar="artifact", help="the kind: artifact (or artifact/NAME)")
    p.add_argument("name", nargs="?", metavar="NAME", help="the Artifact's name")
    p.add_argument("-f", "--filename", metavar="FILE", help="replace the objects of this manifest whole (-: stdin)")
    p.add_argument("--display-name", metavar="TEXT", help="spec.displayName ('' removes it)")
    p.add_argument("--description", metavar="TEXT", help="spec.description ('' removes it)")
    container_options(p, update=True)
    p.set_defaults(prepare=_prepare_update)

    verb("stop", "stop a Workload: its pods are removed, the Workload kept (workload NAME)",
         f"{PATCH} '{{\"spec\":{{\"state\":\"Stopped\"}}}}'", _state("Stopped", "stopped"), "workload")
    verb("start", "start a stopped Workload again (workload NAME)",
         f"{PATCH} '{{\"spec\":{{\"state\":\"Running\"}}}}'", _state("Running", "started"), "workload")
    verb("restart", f"restart a Workload's pods: set the annotation {A_RESTARTED_AT} to now, as kubectl rollout "
                    "restart does (workload NAME)",
         f"kubectl annotate workload.{GROUP} NAME --overwrite {A_RESTARTED_AT}=$(date -u +%Y-%m-%dT%H:%M:%SZ)",
         _restart, "workload")
    verb("register", "register an Artifact: its spec is locked from now on (artifact NAME)",
         f"kubectl patch artifact.{GROUP} NAME --type merge -p '{{\"spec\":{{\"lifecycle\":\"Registered\"}}}}'",
         _register, "artifact")
    p = verb("promote", "promote a Workload's (registered) Artifact to a governed Deployment "
                        "(workload NAME --name PROD)",
             f"kubectl create -f - <<EOF\n  apiVersion: {API_VERSION}\n  kind: Deployment\n  metadata: {{name: PROD}}\n"
             "  spec: {workloadRef: {name: NAME}, importance: High, replicas: N}\n  EOF\n"
             "(admission fills spec.artifactRef from the Workload's artifact)", _promote, "workload")
    p.add_argument("--name", dest="deployment_name", required=True, metavar="PROD", help="the Deployment's name")
    p.add_argument("--importance", choices=IMPORTANCES, help="Critical, High, Moderate (the default) or Low")
    p.add_argument("--replicas", type=int, metavar="N", help="pods to run (default 1)")
    def approval(decision: str) -> str:
        return (f"kubectl get deployment.{GROUP} NAME -o jsonpath='{{.metadata.generation}}'   # the change: G\n"
                f"  kubectl create -f - <<EOF\n  apiVersion: {API_VERSION}\n  kind: Approval\n"
                "  metadata: {generateName: NAME-G-}\n"
                f"  spec: {{deploymentRef: {{name: NAME}}, generation: G, decision: {decision}, deletion: false, "
                "comment: TEXT}\n  EOF")

    for name, decision, summary in (
            ("approve", "Approve", "approve the current change (or, with --deletion, the deletion) of a governed "
                                   "Deployment (deployment NAME); you may not approve your own change"),
            ("reject", "Reject", "reject the current change (or the deletion) of a governed Deployment "
                                 "(deployment NAME): one rejection ends the request")):
        p = verb(name, summary, approval(decision), _decide(decision), "deployment")
        p.add_argument("--comment", metavar="TEXT", help="why")
        p.add_argument("--deletion", action="store_true", help="decide the Deployment's deletion, not a change")
        p.add_argument("--generation", type=int, metavar="G",
                       help="the generation decided (default: the Deployment's current metadata.generation)")
    p = verb("rollback", "switch a governed Deployment back to the Artifact it ran before the current one, or to "
                         "--to-version N of its collection (deployment NAME); approvals apply as to any switch",
             f"kubectl patch deployment.{GROUP} NAME --type merge -p "
             "'{\"spec\":{\"artifactRef\":{\"name\":null,\"collection\":\"C\",\"version\":N}}}'\n"
             "  (or {\"name\":\"ARTIFACT\",\"uid\":\"UID\"} from kubectl kiln history deployment NAME)",
             _rollback, "deployment")
    p.add_argument("--to-version", type=int, metavar="N", help="the version of its collection to run")
    verb("history", "a governed Deployment's audit trail (status.history) as a table (deployment NAME)",
         f"kubectl get deployment.{GROUP} NAME -o jsonpath='{{range .status.history[*]}}{{.time}} {{.action}} "
         "by {.actor}: {.message}{\"\\n\"}{end}'", _history, "deployment", output=("json", "yaml"))
    p = verb("get", "an Artifact as a tree: the Workloads running it and their pods, the Deployments built from it "
                    "and theirs, with their Ready condition, reason and age",
             f"kubectl get artifact.{GROUP} NAME; kubectl get workloads.{GROUP},deployments.{GROUP} "
             f"(those whose spec.artifactRef.name is NAME, or the Workload NAME with an inline artifact); "
             f"kubectl get pods -l '{L_WORKLOAD} in (...)'", _get, None, output=("json", "yaml"))
    p.add_argument("name", metavar="NAME", help="the Artifact's name")
    p.add_argument("-w", "--watch", action="store_true", help="re-render on every change (Ctrl-C ends it)")
    p.add_argument("--interval", type=float, default=WATCH_INTERVAL, help=argparse.SUPPRESS)
    p = verb("call", "one HTTP request to a Workload's Service (<name>-dev) or a governed Deployment's (<name>) "
                     "through kubectl port-forward on 127.0.0.1: POST with --data, else GET; prints the answer "
                     "(workload|deployment NAME)",
             "kubectl port-forward --address=127.0.0.1 service/NAME-dev LOCAL:PORT &   # deployment: service/NAME\n"
             "  curl -d JSON http://127.0.0.1:LOCAL/PATH; kill %1", _call, "workload|deployment", output=())
    p.add_argument("--path", default="/", help="the request's path, e.g. /predict (default /)")
    p.add_argument("--data", "-d", metavar="JSON", help="POST this JSON (@FILE: from a file, @-: stdin)")
    p.add_argument("--port", type=int, metavar="N", help="the Service's port (default: its first)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer (default 30)")
    p = verb("completion", "print a shell completion script for kubectl-kiln (bash or zsh)",
             "source <(kubectl-kiln completion bash)   # kubectl kiln completes through kubectl_complete-kiln",
             None, None, output=())
    p.add_argument("shell", choices=["bash", "zsh"])
    return parser, verbs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["__complete"]:
        for c in complete(argv[1:]):
            print(c)
        return 0
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    if len(getattr(args, "as_group", None) or []) > 1:
        parser.error("--as-group: one group only (the kubernetes client sends one Impersonate-Group header)")
    if args.command == "completion":
        return _completion(args)
    if args.allowed:  # the KIND NAME (or KIND/NAME) a verb takes: usage errors before any API call
        args.target = _target(args, args.allowed)
    if getattr(args, "prepare", None):  # a verb's own usage checks, likewise before any API call
        args.prepare(args)
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return int(args.func(Kube(args), args))
    except ApiException as e:
        return _fail(_api_message(e))
    except HTTPError as e:
        return _fail(f"error: the API server cannot be reached: {e}")
    except Failed as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 130


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()
