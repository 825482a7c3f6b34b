"""The ``kiln`` command line: the operator (`kiln run`), and the development tools (`kiln cluster`,
`kiln images`, in the ``kiln_dev`` package, which the operator's image does not carry)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import ModuleType


def _dev(module: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(f"kiln_dev.{module}")
    except ImportError as e:
        raise SystemExit(f"kiln: the development tools are not installed ({e}): pip install -e '.[dev]' "
                         "from a clone of the repository") from None


def _cluster(args: argparse.Namespace) -> int:
    cluster = _dev("cluster")
    paths = cluster.Paths(cluster.state_dir())
    if args.action == "up":
        kubeconfig = cluster.up(paths, real_node=not args.no_real_node)
        print(kubeconfig)
    elif args.action == "down":
        stopped = cluster.down(paths)
        cluster.log(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    elif args.action == "kubeconfig":
        if cluster.read_state(paths) is None:
            cluster.log("no local cluster: run `kiln cluster up` first")
            return 1
        print(paths.kubeconfig)
    else:
        st = cluster.status(paths)
        if args.json:
            print(json.dumps(st, indent=2))
        elif not st["components"]:
            print("local cluster: not running")
        else:
            print(f"local cluster: {'running' if st['running'] else 'DEGRADED'}  (state {st['stateDir']})")
            print(f"  api server  https://127.0.0.1:{st['ports']['apiserver']}  "
                  f"{'ready' if st['apiReady'] else 'NOT READY'}")
            for name, c in st["components"].items():
                print(f"  {name:<24} pid {c['pid']:<8} {'running' if c['alive'] else 'EXITED'}")
            for n in st["nodes"]:
                print(f"  node {n['name']:<19} {n['kind'] or '?':<9}{n['internalIP']:<16} "
                      f"{'Ready' if n['ready'] else 'NOT READY'}")
            real = st["realNode"]
            if "unavailable" in real:
                print(f"  no real node: {real['unavailable']}")
            else:
                print(f"  registry    {real['registry']} (pods pull from 127.0.0.1:5001)")
                print(f"  ranges      Services {real['serviceCIDR']}, pods {real['podCIDR']}")
            print(f"  kubeconfig  {st['kubeconfig']}")
        return 0 if st["running"] else 3
    return 0


def _images(args: argparse.Namespace) -> int:
    cluster, images = _dev("cluster"), _dev("images")
    bindir = cluster.build_binaries()
    if args.action == "list":
        for image, ref in images.built(bindir).items():
            print(f"{ref}\t{' '.join(images.remote(image, ref))}")
        return 0
    refs = images.build(bindir, tuple(args.name))
    st = cluster.read_state()
    registry = (st or {}).get("node", {}).get("registry")
    if args.push and registry:
        for name in images.push(refs, int(registry.rsplit(":", 1)[1])):
            print(name)
    else:
        if args.push:
            images.log("no local cluster with a registry runs: built only (`kiln cluster up` pushes them)")
        for ref in refs.values():
            print(ref)
    return 0


def _run(args: argparse.Namespace) -> int:
    from kiln import main as operator_main

    _local_registry_mirror()
    return operator_main.run(namespaces=args.namespace, webhook_port=args.webhook_port,
                             webhooks=not args.no_webhooks, register_webhooks=not args.no_register_webhooks,
                             webhook_cert_dir=args.webhook_cert_dir, liveness=args.liveness,
                             webhook_addr=args.webhook_addr, webhook_drain=args.webhook_drain,
                             leader_election=args.leader_election, lease_name=args.lease_name,
                             lease_namespace=args.lease_namespace, lease_duration=args.lease_duration,
                             metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
                             webhook_metrics_port=args.webhook_metrics_port, log_format=args.log_format)


def _local_registry_mirror() -> None:
    """Against the local cluster, images named as its pods see its registry (127.0.0.1:5001/...) are
    resolved at the port the registry has on this host (KILN_REGISTRY_MIRRORS, unless set); without a
    registry (no real node), they keep their tags (KILN_DIGEST_SKIP_REGISTRIES)."""
    try:
        from kiln_dev import cluster, node
    except ImportError:  # the operator's image: no development tools
        return
    st = cluster.read_state()
    if st is None:
        return
    local, registry = f"127.0.0.1:{node.REGISTRY_PORT}", (st.get("node") or {}).get("registry")
    if registry:
        os.environ.setdefault("KILN_REGISTRY_MIRRORS", f"{local}=http://{registry}")
    else:
        skipped = os.environ.get("KILN_DIGEST_SKIP_REGISTRIES", "")
        os.environ["KILN_DIGEST_SKIP_REGISTRIES"] = ",".join(filter(None, (skipped, local)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("cluster", help="a local Kubernetes control plane on 127.0.0.1")
    c.add_argument("action", choices=["up", "down", "status", "kubeconfig"])
    c.add_argument("--json", action="store_true", help="status as JSON")
    c.add_argument("--no-real-node", action="store_true",
                   help="up: the simulated node only, even where a real node could run (also KILN_REAL_NODE=0)")
    c.set_defaults(func=_cluster)

    i = sub.add_parser("images", help="container images built with buildah, for the local cluster's registry")
    i.add_argument("action", choices=["build", "list"])
    i.add_argument("name", nargs="*", help="build only these (operator, scorer, pause)")
    i.add_argument("--push", action="store_true", help="build: push to the local cluster's registry if it runs")
    i.set_defaults(func=_images)

    r = sub.add_parser("run", help="run the operator against the current kubeconfig")
    r.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable); default: all namespaces")
    r.add_argument("--webhook-port", type=int, default=0,
                   help="port of the TLS webhook server (default: a free one on 127.0.0.1; 9443 in a cluster)")
    r.add_argument("--no-webhooks", action="store_true", help="serve no admission webhooks")
    r.add_argument("--no-register-webhooks", action="store_true",
                   help="serve the local webhooks but leave their configurations to someone else")
    r.add_argument("--webhook-cert-dir", default=None,
                   help="in a cluster: serve the webhooks on --webhook-addr (port 9443 unless --webhook-port) "
                        "with DIR/tls.crt and DIR/tls.key; the Helm chart owns the configurations")
    r.add_argument("--webhook-addr", default=None,
                   help="address the webhook server binds (default: 127.0.0.1; 0.0.0.0 with --webhook-cert-dir; "
                        "the chart passes the pod's IP)")
    r.add_argument("--webhook-drain", type=float, default=0.0, metavar="SECONDS",
                   help="on stopping, keep serving the webhooks this long after reconciling has stopped "
                        "(while the pod leaves the webhook Service)")
    r.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=False,
                   help="reconcile only while holding a coordination.k8s.io Lease; the webhooks are served "
                        "either way, so several replicas can run (the chart turns it on)")
    r.add_argument("--lease-name", default="kiln-operator", help="the leader election's Lease")
    r.add_argument("--lease-namespace", default=None,
                   help="the Lease's namespace (default: $POD_NAMESPACE, the ServiceAccount's, or default)")
    r.add_argument("--lease-duration", type=int, default=15, metavar="SECONDS",
                   help="a leader that stops renewing is replaced after this long (renewals every 2/15 of it)")
    r.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    r.add_argument("--metrics-port", type=int, default=0,
                   help="serve Prometheus metrics on this port (/metrics, plain HTTP; default none; the chart: 8081)")
    r.add_argument("--metrics-addr", default="127.0.0.1",
                   help="address of the metrics endpoints (default 127.0.0.1; the chart passes the pod's IP)")
    r.add_argument("--webhook-metrics-port", type=int, default=0,
                   help="the webhook server's metrics on this port (default: none; 8082 in the chart)")
    r.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="text lines (default) or one JSON object per line: time, level, logger, kind, namespace, "
                        "name, message")
    r.set_defaults(func=_run)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
