"""Governance of governed Deployments (docs/governance.md): which changes wait for approvals under a
namespace's policy (:func:`gate`, pure), whether a deletion may go ahead (:func:`deletion_verdict`,
pure), and reading the policy and the approvals. Used by the Deployment controller and by the admission
webhooks; it imports no kopf."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pydantic

from kiln import kube
from kiln.api.models import (
    ROLLOUT_ACTIONS,
    Approval,
    ApprovalDecision,
    ApprovalPolicySpec,
    Condition,
    Deployment,
    HistoryAction,
    HistoryEntry,
    Importance,
    Trigger,
)
from kiln.controllers.conditions import APPROVED, condition, parse_time
from kiln.names import A_CHANGED_BY, APPROVAL_POLICIES, APPROVALS, DEFAULT_POLICY, VERB_APPROVE

SEVERITY = [Importance.LOW, Importance.MODERATE, Importance.HIGH, Importance.CRITICAL]


@dataclass
class Gate:
    """What the approval policy says of a Deployment's pending change (pure :func:`gate`)."""

    may_roll_out: bool
    approved: Condition  # the Approved condition
    entries: list[HistoryEntry] = field(default_factory=list)  # governance entries to add, in order


def triggers(entries: list[HistoryEntry]) -> set[Trigger]:
    """The policy triggers among the changes a rollout would record."""
    out = set()
    for e in entries:
        if e.action == HistoryAction.CREATED:
            out.add(Trigger.CREATE)
        elif e.action in (HistoryAction.ARTIFACT_SWITCHED, HistoryAction.ROLLED_BACK):
            out.add(Trigger.ARTIFACT_SWITCH)
        elif e.action == HistoryAction.IMPORTANCE_CHANGED:
            out.add(Trigger.IMPORTANCE_CHANGE)
        elif e.action == HistoryAction.SCALED and e.replicas == 0:
            out.add(Trigger.SCALE_TO_ZERO)
    return out


def decisions(approvals: list[Approval], dep: Deployment, *, deletion: bool, excluding: str) -> list[Approval]:
    """The Approvals that decide the Deployment's current generation (its change, or its deletion), by
    someone other than ``excluding`` (who asked for it). Pure."""
    return [a for a in approvals if a.spec.deployment_ref.name == dep.metadata.name and a.spec.deletion == deletion
            and a.spec.generation == dep.metadata.generation and a.spec.approver and a.spec.approver != excluding]


def gate(dep: Deployment, changes: list[HistoryEntry], policy: ApprovalPolicySpec,
         approvals: Callable[[], list[Approval]], at: str) -> Gate:
    """Whether the pending change (``changes``: the rollout entries it would record) may roll out under
    ``policy``, with the approvals of this Deployment (read only when the policy asks for some): the
    requester (the author of the change) never counts; one Reject ends the request; a request waits
    ``policy.expire_after_seconds`` at most. Pure."""
    meta, gen = dep.metadata, dep.metadata.generation
    requester = meta.annotations.get(A_CHANGED_BY) or "unknown"
    rollouts = [h for h in dep.status.history or [] if h.action in ROLLOUT_ACTIONS]
    before = rollouts[-1].importance if rollouts and rollouts[-1].importance else dep.spec.importance
    importance = max(before, dep.spec.importance, key=SEVERITY.index)  # lowering it needs the higher's
    needed = policy.approvals_for(importance)
    asked = sorted(triggers(changes) & set(policy.triggers))
    if not asked or not needed:
        return Gate(True, condition(APPROVED, True, "NotRequired", f"no approval required for this change "
                                    f"(importance {importance})", gen))
    what = ", ".join(asked)
    on_record = [h for h in dep.status.history or [] if h.generation == gen and h.action not in ROLLOUT_ACTIONS]
    recorded = {(h.action, h.actor) for h in on_record}
    out: list[HistoryEntry] = []

    def entry(action: HistoryAction, actor: str, message: str) -> None:
        if (action, actor) not in recorded:
            out.append(HistoryEntry(time=at, action=action, actor=actor, generation=gen, importance=importance,
                                    message=message))
            recorded.add((action, actor))

    entry(HistoryAction.APPROVAL_REQUESTED, requester,
          f"{what} (generation {gen}) needs {needed} approval(s) for importance {importance}")
    decided = decisions(approvals(), dep, deletion=False, excluding=requester)
    rejected = [a for a in decided if a.spec.decision == ApprovalDecision.REJECT]
    if rejected:
        first = rejected[0].spec
        entry(HistoryAction.REJECTED, str(first.approver), first.comment or "rejected")
        return Gate(False, condition(APPROVED, False, "Rejected", f"generation {gen} rejected by {first.approver}"
                                     + (f": {first.comment}" if first.comment else ""), gen), out)
    approvers: list[str] = []
    for a in decided:
        if a.spec.approver not in approvers:
            approvers.append(str(a.spec.approver))
            entry(HistoryAction.APPROVED, str(a.spec.approver), a.spec.comment or "approved")
    if len(approvers) >= needed:
        return Gate(True, condition(APPROVED, True, "Approved", f"generation {gen} ({what}) approved by "
                                    f"{', '.join(approvers)}", gen), out)
    requested = next((h.time for h in on_record if h.action == HistoryAction.APPROVAL_REQUESTED), at)
    deadline = parse_time(requested) + timedelta(seconds=policy.expire_after_seconds)
    if parse_time(at) >= deadline:
        entry(HistoryAction.EXPIRED, "kiln", f"no decision within {policy.expire_after_seconds}s")
        return Gate(False, condition(APPROVED, False, "Expired", f"generation {gen} ({what}) was not approved "
                                     f"within {policy.expire_after_seconds}s: change the spec to ask again", gen), out)
    return Gate(False, condition(APPROVED, False, "AwaitingApproval", (
        f"generation {gen} ({what}, requested by {requester}) needs {needed - len(approvers)} more approval(s) "
        f"for importance {importance}, from users with the verb {VERB_APPROVE} on deployments.kiln.dev other than "
        f"{requester}" + (f" (approved by {', '.join(approvers)})" if approvers else "")
        + f"; expires {deadline.strftime('%Y-%m-%dT%H:%M:%SZ')}"), gen), out)


def policy_of(namespace: str) -> ApprovalPolicySpec:
    """The approval policy of a namespace: its ApprovalPolicy named default, else the operator's default
    (KILN_APPROVAL_POLICY, JSON, from the chart's governance.defaultPolicy), else the built-in one."""
    body = kube.get_kiln(APPROVAL_POLICIES, namespace, DEFAULT_POLICY)
    for source in ((body or {}).get("spec"), json.loads(os.environ.get("KILN_APPROVAL_POLICY") or "null")):
        if source is not None:
            try:
                return ApprovalPolicySpec.model_validate(source)
            except pydantic.ValidationError:
                continue  # admitted by an older schema: the next source
    return ApprovalPolicySpec()


def approvals_of(namespace: str) -> list[Approval]:
    out = []
    for body in kube.list_kiln(APPROVALS, namespace):
        try:
            out.append(Approval.model_validate(body))
        except pydantic.ValidationError:
            continue
    return out


def deletion_verdict(dep: Deployment, policy: ApprovalPolicySpec, approvals: list[Approval], user: str) -> str | None:
    """Why ``user`` may not delete this Deployment yet (None: they may): under a policy with the Delete
    trigger, its deletion needs as many approvals as a change of its importance, Approvals with
    ``deletion: true`` for its current generation, by users other than the one deleting. Pure."""
    meta, importance = dep.metadata, dep.spec.importance
    needed = policy.approvals_for(importance)
    if Trigger.DELETE not in policy.triggers or not needed:
        return None
    decided = decisions(approvals, dep, deletion=True, excluding=user)
    rejected = next((a.spec for a in decided if a.spec.decision == ApprovalDecision.REJECT), None)
    if rejected is not None:
        return (f"deleting Deployment {meta.name} was rejected by {rejected.approver}"
                + (f": {rejected.comment}" if rejected.comment else ""))
    approvers = {a.spec.approver for a in decided if a.spec.decision == ApprovalDecision.APPROVE}
    if len(approvers) >= needed:
        return None
    return (f"deleting Deployment {meta.name} (importance {importance}) needs {needed} approval(s) of its deletion "
            f"({len(approvers)} so far): Approvals with spec.deletion: true for generation {meta.generation}, by "
            f"users with the verb {VERB_APPROVE} on deployments.kiln.dev other than {user}")
