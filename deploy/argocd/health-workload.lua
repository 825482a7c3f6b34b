-- Argo CD health of a kiln.dev/v1alpha1 Workload (argocd-cm: resource.customizations.health.kiln.dev_Workload).
-- Healthy once the operator has observed the latest generation and the Ready condition is True;
-- Suspended when stopped as requested (spec.state: Stopped); Degraded when it cannot run without a
-- change (its artifact is missing or invalid, a name conflict); Progressing otherwise (pods starting,
-- a restart, stopping).
local degraded = {ArtifactNotFound = true, InvalidArtifact = true, NameConflict = true}
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
if ready.status == "True" and ready.reason == "Stopped" then
  hs.status = "Suspended"
elseif ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and degraded[ready.reason] then
  hs.status = "Degraded"
end
return hs
