-- Argo CD health check for localmodel.io/LocalModel, read from the kstatus conditions the
-- localmodel controller writes:
--   Healthy      Ready=True, computed for the current generation
--   Degraded     Stalled=True for the current generation (needs a spec or engine change)
--   Progressing  anything else: no status yet, a generation not yet observed, work in progress
local hs = {}

local function find(conditions, type)
  if conditions == nil then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if condition.type == type then
      return condition
    end
  end
  return nil
end

-- A condition computed for an older generation says nothing about the current spec.
local function current(condition, generation)
  return generation == nil or condition.observedGeneration == nil or condition.observedGeneration >= generation
end

local function describe(condition)
  if condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason .. ": " .. (condition.message or "")
  end
  return condition.message or ""
end

local generation = obj.metadata.generation
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the localmodel controller to report status"
  return hs
end
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the localmodel controller to observe generation " .. generation
  return hs
end

local stalled = find(obj.status.conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" and current(stalled, generation) then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = find(obj.status.conditions, "Ready")
if ready ~= nil and ready.status == "True" and current(ready, generation) then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil and current(ready, generation) then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
