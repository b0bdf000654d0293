-- Argo CD health check for whatsapp-operator.io/EvolutionServer and ClusterEvolutionServer.
-- Installed as resource.customizations.health.whatsapp-operator.io_EvolutionServer and
-- resource.customizations.health.whatsapp-operator.io_ClusterEvolutionServer in argocd-cm
-- (argocd-cm-patch.yaml carries identical copies; a test keeps them equal).
--
-- Mapping, first match wins:
--   deletion in progress                      -> Progressing (a server in use is kept by its
--                                                finalizer until no WhatsAppInstance uses it)
--   no status / no Ready condition yet        -> Progressing "Waiting for the operator"
--   metadata.generation > observedGeneration  -> Progressing (the operator has not seen the spec)
--   Ready=True                                -> Healthy
--   Ready=False with a reason that passes by  -> Progressing: the operator is connecting and
--   itself (Pending, Connecting, Reconnecting)   nothing is known to be wrong yet
--   Ready=False with any other reason         -> Degraded, with the condition's message: Evolution
--                                                is unreachable, refuses the key, the Secret is
--                                                missing, the certificate does not verify, ...
--   anything else (Ready=Unknown)             -> Progressing
-- The message is the Ready condition's, else status.message.
-- Written for Lua 5.1 (Argo CD runs gopher-lua).

local hs = {}

local TRANSIENT = { Pending = true, Connecting = true, Reconnecting = true }

local function nonempty(value)
  if type(value) == "string" and value ~= "" then
    return value
  end
  return nil
end

local function condition(status, kind)
  if type(status) ~= "table" or type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

local metadata = obj.metadata or {}
local status = obj.status
local ready = condition(status, "Ready")
local message = nil
if ready ~= nil then
  message = nonempty(ready.message)
end
if message == nil and type(status) == "table" then
  message = nonempty(status.message)
end

if metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted; kept while WhatsAppInstances use it"
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local observed = status.observedGeneration
if observed == nil then
  observed = ready.observedGeneration
end
if type(metadata.generation) == "number" and type(observed) == "number"
    and metadata.generation > observed then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d (status is for generation %d)",
    metadata.generation, observed)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and not TRANSIENT[ready.reason] then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = message or nonempty(ready.reason) or ("Ready=" .. tostring(ready.status))
return hs
