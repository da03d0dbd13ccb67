-- Read every requested breaker record and the server's clock in one round trip.
--
-- KEYS     the providers' state hashes (one hash slot: they share the prefix's hash tag)
-- Returns  {seconds, microseconds, entry1, entry2, ...}: the server's TIME, then one entry
--          per key: the HGETALL array of a hash (empty when the key is absent), or the
--          string 'wrongtype' when the key holds something else. Python parses the fields
--          and reports garbage; nothing here raises on a bad key.
--
-- HGETALL under pcall rather than TYPE then HGETALL: one command per key instead of two,
-- on the path every Lambda request takes.

local clock = redis.call('TIME')
local out = {clock[1], clock[2]}
for i = 1, #KEYS do
  local fields = redis.pcall('HGETALL', KEYS[i])
  if type(fields) == 'table' and fields['err'] then
    if not string.find(tostring(fields['err']), 'WRONGTYPE', 1, true) then
      return fields -- any other error (an ACL denial, say) is the caller's to see
    end
    out[#out + 1] = 'wrongtype'
  else
    out[#out + 1] = fields
  end
end
return out
