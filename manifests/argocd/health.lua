-- Argo CD health check for whatsapp-operator.io/WhatsAppInstance.
-- Installed as resource.customizations.health.whatsapp-operator.io_WhatsAppInstance in argocd-cm
-- (argocd-cm-patch.yaml carries an identical copy; a test keeps the two equal).
--
-- Mapping, first match wins:
--   deletion in progress                      -> Progressing (the finalizer waits for Evolution)
--   no status / no phase yet                  -> Progressing "Waiting for the operator"
--   metadata.generation > observedGeneration  -> Progressing (the operator has not seen the spec)
--   phase Failed or condition Stalled=True    -> Degraded (only a spec change helps)
--   condition Ready=Unknown                   -> Unknown (Evolution API unreachable: the
--                                                connection state really is unknown)
--   condition Synced=False                    -> Degraded, with the Synced condition's message,
--                                                whatever the phase (Connected included): the
--                                                last call to Evolution API failed (a refused
--                                                key, a rejected request, a server error) and a
--                                                person should look. Not Progressing: nothing
--                                                says the operator is about to fix it, and the
--                                                README promises an error is never hidden behind
--                                                Ready=True. Crossplane's health check, which
--                                                these conditions follow, does the same. A
--                                                passing failure clears itself: the next call
--                                                that succeeds sets Synced=True again. The two
--                                                exceptions come first: deletion (Progressing,
--                                                the message says what blocks it) and an
--                                                unreachable Evolution (Ready=Unknown: Unknown).
--   Connected (Ready=True)                    -> Healthy
--   AwaitingScan                              -> Suspended: the instance waits for a person to
--                                                scan the QR code, something outside the
--                                                controller, not work in progress. Argo CD's
--                                                Suspended means "paused, waiting for an external
--                                                event"; the application shows it as such instead
--                                                of spinning as Progressing for hours. Note that
--                                                neither Suspended nor Progressing lets a later
--                                                sync wave start (a wave waits for Healthy), so
--                                                keep WhatsAppInstances in the last wave.
--   Disconnected, LoggedOut                   -> Degraded: the number is offline and the operator
--                                                will not start a QR cycle on its own; a person
--                                                must ask for one (reconnect annotation).
--   Pending, Creating, Connecting             -> Progressing
--   any other phase                           -> Unknown
-- The message is status.message unless a rule above says otherwise.
-- Written for Lua 5.1 (Argo CD runs gopher-lua).

local hs = {}

local function condition(status, kind)
  if status == nil or type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

local function nonempty(value)
  if type(value) == "string" and value ~= "" then
    return value
  end
  return nil
end

local metadata = obj.metadata or {}
local status = obj.status

if metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Removing the instance from Evolution API"
  local synced = condition(status, "Synced")
  if synced ~= nil and synced.status == "False" and nonempty(synced.message) then
    hs.message = hs.message .. "; waiting: " .. synced.message
  end
  return hs
end

if type(status) ~= "table" or nonempty(status.phase) == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local phase = status.phase
local message = nonempty(status.message) or phase
local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local synced = condition(status, "Synced")

local observed = status.observedGeneration
if observed == nil and ready ~= nil then
  observed = ready.observedGeneration
end
if type(metadata.generation) == "number" and type(observed) == "number"
    and metadata.generation > observed then
  hs.status = "Progressing"
  hs.message = string.format("Waiting for the operator to observe generation %d (status is for generation %d)",
    metadata.generation, observed)
  return hs
end

if phase == "Failed" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = message
  if phase ~= "Failed" and nonempty(stalled.message) then
    hs.message = stalled.message
  end
  return hs
end

if ready ~= nil and ready.status == "Unknown" then
  hs.status = "Unknown"
  hs.message = message
  return hs
end

if synced ~= nil and synced.status == "False" then
  hs.status = "Degraded"
  hs.message = nonempty(synced.message) or message
  return hs
end

if phase == "Connected" then
  hs.status = "Healthy"
elseif phase == "AwaitingScan" then
  hs.status = "Suspended"
elseif phase == "Disconnected" or phase == "LoggedOut" then
  hs.status = "Degraded"
elseif phase == "Pending" or phase == "Creating" or phase == "Connecting" then
  hs.status = "Progressing"
else
  hs.status = "Unknown"
  message = "Unrecognised phase " .. phase .. ": " .. message
end
hs.message = message
return hs
