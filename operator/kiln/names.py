"""Every name Kiln puts on the API: its group and version, the kinds' plurals, and the labels and
annotations it sets or reads. One place, so that a name is written once."""

from __future__ import annotations

from typing import Final

GROUP: Final = "kiln.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

ARTIFACTS: Final = "artifacts"
WORKLOADS: Final = "workloads"
DEPLOYMENTS: Final = "deployments"
APPROVALS: Final = "approvals"
APPROVAL_POLICIES: Final = "approvalpolicies"
DEFAULT_POLICY: Final = "default"  # the ApprovalPolicy of a namespace is the one of this name

MANAGED_BY: Final = "kiln"  # app.kubernetes.io/managed-by of everything Kiln creates

# Labels of the children (selectors and the operator's watches use them).
L_WORKLOAD: Final = "kiln.dev/workload"
L_DEPLOYMENT: Final = "kiln.dev/deployment"
L_ARTIFACT: Final = "kiln.dev/artifact"
L_DIGEST: Final = "kiln.dev/spec-digest"  # label-safe: the first 32 hex characters
L_REVISION: Final = "kiln.dev/revision"
L_INDEX: Final = "kiln.dev/index"
L_IMPORTANCE: Final = "kiln.dev/importance"
# On a governed Deployment's pods: the uid of the Deployment they belong to (its Service and PDB select it).
L_OWNER_UID: Final = "kiln.dev/owner-uid"
# On an Artifact, stamped at admission (users cannot set them): its collection, and the version its
# registration was given (`kubectl get kart -l kiln.dev/collection=scorer`).
L_COLLECTION: Final = "kiln.dev/collection"
L_VERSION: Final = "kiln.dev/version"

# Annotations.
A_DIGEST: Final = "kiln.dev/spec-digest"  # the whole sha256:<hex>, on pods and apps/v1 Deployments
A_DESIRED: Final = "kiln.dev/desired-hash"  # an apps/v1 Deployment's desired spec, to tell hand edits
A_RESTARTED_AT: Final = "kiln.dev/restartedAt"  # set by users on a Workload: restart its pods
A_CREATED_BY_WORKLOAD: Final = "kiln.dev/created-by-workload"  # on a Draft Artifact made from an inline one
A_REGISTERED_BY: Final = "kiln.dev/registered-by"  # set by admission from the request's user
A_REGISTERED_AT: Final = "kiln.dev/registered-at"
A_IMAGES: Final = "kiln.dev/images"  # set by admission at registration: each container's image digest (JSON)
A_CHANGED_BY: Final = "kiln.dev/changed-by"  # on a governed Deployment: who made the last spec change

# Kiln's own RBAC verbs on its kinds: who may write their status (the operator's role grants it), who
# may register an Artifact, who may approve a change of a governed Deployment.
VERB_RECONCILE: Final = "reconcile"
VERB_REGISTER: Final = "register"
VERB_APPROVE: Final = "approve"

# kopf's own annotations. Not "kiln.dev": kopf leaves annotations under its prefix out of the diff it
# reacts to, and users' kiln.dev/restartedAt must trigger a reconcile.
KOPF_PREFIX: Final = "operator.kiln.dev"
FINALIZER: Final = "kiln.dev/finalizer"

# The operator's webhook configurations when it registers them itself (`kiln run`); the chart names
# its own after the release.
WEBHOOK_CONFIG_NAME: Final = "kiln.dev"
POLICY_PREFIX: Final = "kiln.dev"  # its ValidatingAdmissionPolicies: kiln.dev-status, kiln.dev-specs
ROLE_PREFIX: Final = "kiln"  # the personas' ClusterRoles: kiln-viewer, kiln-developer, kiln-registrar, ...
