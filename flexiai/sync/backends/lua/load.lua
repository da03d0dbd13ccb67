-- Read every requested breaker record and the server's clock in one round trip.
--
-- KEYS     the providers' state hashes (one hash slot: they share the prefix's hash tag)
-- Returns  {seconds, microseconds, entry1, entry2, ...}: the server's TIME, then one entry
--          per key: the HGETALL array of a hash, or the key's TYPE ('none' when absent, any
--          other type is garbage). Python parses the fields and reports garbage; nothing
--          here raises on a bad key.

local clock = redis.call('TIME')
local out = {clock[1], clock[2]}
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind == 'hash' then
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
  else
    out[#out + 1] = kind
  end
end
return out
