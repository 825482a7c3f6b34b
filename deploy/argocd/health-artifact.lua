-- Argo CD health of a kiln.dev/v1alpha1 Artifact (argocd-cm: resource.customizations.health.kiln.dev_Artifact).
-- Healthy once the operator has observed the latest generation and the Ready condition is True (a Draft
-- or a Registered artifact); Degraded when its spec is invalid; Progressing otherwise.
local degraded = {InvalidSpec = true}
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
