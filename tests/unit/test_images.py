"""kiln.images' cache keys: an image is rebuilt exactly when what it is built from changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln_dev import images


@pytest.fixture
def repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    (tmp_path / "examples" / "scorer").mkdir(parents=True)
    (tmp_path / "examples" / "scorer" / "scorer.py").write_text("print('v')\n")
    (tmp_path / "examples" / "scorer" / "Dockerfile").write_text("FROM x\n")
    monkeypatch.setattr(images, "REPO_ROOT", tmp_path)
    return tmp_path


def test_the_key_follows_the_inputs_the_build_arguments_and_the_base(repo: Path) -> None:
    v1 = images.content_key(images.SCORER_V1, "base-1")
    assert v1 == images.content_key(images.SCORER_V1, "base-1")
    assert v1 != images.content_key(images.SCORER_V2, "base-1"), "VERSION is a build argument"
    assert v1 != images.content_key(images.SCORER_V1, "base-2"), "a new base"
    (repo / "examples" / "scorer" / "__pycache__").mkdir()
    (repo / "examples" / "scorer" / "__pycache__" / "scorer.pyc").write_bytes(b"\0")
    assert v1 == images.content_key(images.SCORER_V1, "base-1"), "byte code is no input"
    (repo / "examples" / "scorer" / "scorer.py").write_text("print('w')\n")
    assert v1 != images.content_key(images.SCORER_V1, "base-1")


def test_images_are_pushed_under_their_key_and_their_fixed_tags() -> None:
    assert images.remote(images.SCORER_V2, "localhost/kiln/scorer:0123abcd") == [
        "127.0.0.1:5001/kiln/scorer:0123abcd", "127.0.0.1:5001/kiln/scorer:v2"]
    assert images.remote(images.PAUSE, "localhost/kiln/pause:feed", "127.0.0.1:5003") == [
        "127.0.0.1:5003/kiln/pause:feed", "127.0.0.1:5003/kiln/pause:3.10.2"]
