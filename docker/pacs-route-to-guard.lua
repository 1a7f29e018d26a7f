-- The demo PACS routes every instance it receives to the guard, as a PACS archive route would.
-- Instances the guard itself sends back (none in this demo) would not be routed again.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin["RequestOrigin"] ~= "Lua" then
    SendToModality(instanceId, "guard")
  end
end
