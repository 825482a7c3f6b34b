-- Argo CD health of a governed kiln.dev/v1alpha1 Deployment
-- (argocd-cm: resource.customizations.health.kiln.dev_Deployment).
-- Healthy once the operator has observed the latest generation and the rollout is complete (Ready
-- True); Degraded when the operator refuses to roll out or the rollout is stuck (the artifact is
-- missing, not Registered or not the pinned digest, a name conflict, the progress deadline exceeded);
-- Progressing otherwise (creating, rolling out).
local degraded = {
  ArtifactNotFound = true, ArtifactNotRegistered = true, DigestMismatch = true,
  NameConflict = true, WorkloadNotFound = true, ProgressDeadlineExceeded = true,
}
local hs = {status = "Progressing", message = "Waiting for the Kiln operator"}
local st = obj.status
if st == nil or st.observedGeneration == nil then
  return hs
end
if obj.metadata.generation ~= nil and st.observedGeneration < obj.metadata.generation then
  hs.message = "Waiting for the Kiln operator to observe generation " .. obj.metadata.generation
  return hs
end
local ready = nil
for _, c in ipairs(st.conditions or {}) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil then
  return hs
end
hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and degraded[ready.reason] then
  hs.status = "Degraded"
end
return hs
