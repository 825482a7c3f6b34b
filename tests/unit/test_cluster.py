"""kiln.cluster's clean-up: `kiln cluster down` removes what `kiln cluster up` made, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kiln_dev import cluster


def made_by_up(root: Path) -> None:
    for name in ("pki", "logs", "etcd"):
        (root / name).mkdir(parents=True)
        (root / name / "file").write_text("x")
    (root / "state.json").write_text(json.dumps({"processes": []}))
    (root / "kubeconfig").write_text("{}")


def test_down_removes_only_what_up_made(tmp_path: Path) -> None:
    """Pointed at a directory holding other files (a mistyped KILN_CLUSTER_DIR), they stay."""
    made_by_up(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "src").mkdir()
    cluster.down(cluster.Paths(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "src"]


def test_down_removes_its_own_directory_once_empty(tmp_path: Path) -> None:
    root = tmp_path / "cluster"
    made_by_up(root)
    cluster.down(cluster.Paths(root))
    assert not root.exists()


def test_down_can_keep_the_logs(tmp_path: Path) -> None:
    made_by_up(tmp_path)
    cluster.down(cluster.Paths(tmp_path), keep_logs=True)
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]


def test_an_empty_state_dir_variable_means_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_CLUSTER_DIR", "")
    monkeypatch.setenv("XDG_STATE_HOME", "")
    assert cluster.state_dir() == Path.home() / ".local" / "state" / "kiln" / "cluster"
    monkeypatch.setenv("KILN_CLUSTER_DIR", "/srv/kiln")
    assert cluster.state_dir() == Path("/srv/kiln")
