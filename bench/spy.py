"""The profiles behind docs/benchmarks.md: py-spy (GIL-holding samples, 200 Hz, raw collapsed stacks)
on the operator, on a private control plane of its own, with a summary by function of the samples.

  .venv/bin/python bench/spy.py throughput [N]   N Workloads created until Running (default 500)
  .venv/bin/python bench/spy.py startup [N]      a start of the operator with N objects (default 4000)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import run as bench

from kiln.admission.process import free_port
from kiln_dev import cluster


def spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw", "--rate", "200",
                             "--subprocesses", "--nonblocking", "--gil", "-o", str(out), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(path: str) -> str:
    """A frame's file as its package path ("kopf/_core/…", "kiln/controllers/…", "threading.py")."""
    for root in ("/site-packages/", "/operator/", "/lib/python3."):
        if root in path:
            rest = path.split(root, 1)[1]
            return rest.split("/", 1)[1] if root == "/lib/python3." else rest
    return path


def summary(raw: Path, top: int = 40) -> str:
    """Each function's share of the samples, its callees included."""
    total, incl = 0, Counter[str]()
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        total += int(n)
        for key in {re.sub(r" \((.*?):\d+\)", lambda m: f" {_short(m.group(1))}", f) for f in stack.split(";")}:
            incl[key] += int(n)
    return "\n".join([f"{total} samples"] + [f"{100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)])


def main(mode: str, n: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="kiln-profile-"))
    paths = cluster.Paths(workdir / "cluster")
    b = bench.Bench(cluster.up(paths, real_node=False), workdir)
    out = workdir / f"{mode}.raw"
    try:
        b.kubectl("apply", "--server-side", "-f", str(bench.ROOT / "crds"))
        b.kubectl("wait", "--for=condition=Established", "crd/artifacts.kiln.dev", "crd/workloads.kiln.dev")
        b.start_operator()
        if mode == "throughput":
            b.kiln(50)  # warm-up
            proc = spy(b.operator_pids()[0], out)
            run = b.kiln(n)
            proc.send_signal(2)
            proc.wait(60)
            print(f"N={n}: {run['s']:.2f} s, {1e3 * run['cpu']:.2f} ms of CPU per Workload")
        else:
            b.footprint(n, b.namespace(), 0)  # n objects, the operator restarted once on them
            b.stop_operator()
            port, t0 = free_port(), time.monotonic()
            b.start_operator(("--metrics-port", str(port)))
            proc = spy(b.operator_pids()[0], out)
            def reconciled() -> bool:
                done = bench.reconcile_counts(bench.scrape(port))
                return min(done.get("workload", 0), done.get("artifact", 0)) >= n // 2

            bench.wait(reconciled, 600, f"{n} objects reconciled", interval=0.5)
            took = time.monotonic() - t0
            proc.send_signal(2)
            proc.wait(60)
            print(f"start-up with {n} objects: {took:.1f} s (sampled from 'registered validating' on)")
        print(summary(out))
        print(f"raw stacks: {out}")
    finally:
        b.stop_operator()
        cluster.down(paths)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "throughput"
    main(mode, int(sys.argv[2]) if len(sys.argv) > 2 else (500 if mode == "throughput" else 4000))
