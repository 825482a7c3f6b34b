"""The tutorial on both nodes: on the simulated one (fast, any machine) and on the real one, where the
model is called over HTTP at each step."""

from __future__ import annotations

import pytest

from tests.e2e.tutorial import run_tutorial
from tests.kube import Kube, Operator

pytestmark = pytest.mark.cluster


def test_tutorial_on_the_simulated_node(kube: Kube, operator: Operator, namespace: str) -> None:
    run_tutorial(kube, namespace, real=False)


def test_tutorial_on_the_real_node(kube: Kube, operator: Operator, real_namespace: str) -> None:
    run_tutorial(kube, real_namespace, real=True)
