-- Breaker operations, applied atomically: the Redis twin of circuit_breaker/_machine.py.
-- Keep the two in step; tests/sync runs randomized sequences through both and compares.
--
-- KEYS     one state string per provider ({prefix}:state:{provider})
-- ARGV[1]  worker_id
-- ARGV[2]  the policy, one JSON object (circuit_breaker._machine.Policy.wire)
-- ARGV[3]  state_ttl in ms
-- ARGV[4]  the channel to publish events on ('' = publish nothing)
-- ARGV[5]  now in ms ('' = the server's TIME; tests pass it to be deterministic)
-- ARGV[6]  the key prefix, carried by every event so other apps on the channel drop it
-- then for each key: the provider's name, and its operation
--          'op successes slow age open_for known' (age and open_for in ms; known: the
--          version this worker last read for the key; '-' for none); op 'read' only reads.
-- Returns  {now, then for each key: flags, event, record}: flags are three '0'/'1' for
--          changed, granted and invalid; event is '' for none; record is the stored JSON
--          after the operation (BreakerRecord.to_json(), byte for byte), or '' for none.
--
-- Every time is integer milliseconds on the server's clock, so workers' clocks never have
-- to agree and no float is ever formatted. A key that holds garbage (another type, over
-- 4096 bytes, or JSON Python's BreakerRecord.from_json would reject) reads as a fresh
-- CLOSED record and is overwritten by the next operation that is not a read. So is a record
-- whose version is more than MAX_VERSION_STEP ahead of the one the caller last read
-- (_record.version_jumped). A record of a newer schema is never written (see
-- circuit_breaker/_record.py). Versions wrap to 1 instead of reaching 2^53
-- (_record.next_version).

local SCHEMA, MAX_BYTES, MAX_BUCKETS, MAX_TEXT, MAX_INT = 2, 4096, 64, 800, 2^53
local MAX_VERSION_STEP = 2^32 -- _record.MAX_VERSION_STEP
local CLOCK_TOLERANCE = 5000 -- _machine.CLOCK_TOLERANCE
local STATES = {CLOSED = true, OPEN = true, HALF_OPEN = true}
local REASONS = {[''] = true, failure_rate = true, consecutive_failures = true,
                 slow_calls = true, probe_failed = true, retry_after = true}
local INTS = {'version', 'run', 'run_started_at', 'opened_at', 'open_until',
              'probes_in_flight', 'probe_lease_until', 'successes', 'updated_at'}

local function fresh(version)
  return {schema = SCHEMA, state = 'CLOSED', version = version or 0, run = 0,
          run_started_at = 0, buckets = {}, opened_at = 0, open_until = 0,
          opened_because = '', probes_in_flight = 0, probe_lease_until = 0, successes = 0,
          updated_by = '', updated_at = 0}
end

local function copy(record)
  local out = {}
  for name, value in pairs(record) do out[name] = value end
  return out
end

-- A JSON number as Python's json module reads it: cjson also takes hex, nan, inf, '+1',
-- '01' and '1.', which Python rejects, so the text is checked before cjson sees it.
local function json_number(token)
  local i = 1
  if string.sub(token, 1, 1) == '-' then i = 2 end
  local _, last = string.find(token, '^0', i)
  if not last then _, last = string.find(token, '^[1-9]%d*', i) end
  if not last then return false end
  i = last + 1
  _, last = string.find(token, '^%.%d+', i)
  if last then i = last + 1 end
  _, last = string.find(token, '^[eE][-+]?%d+', i)
  if last then i = last + 1 end
  return i == #token + 1
end

-- True when raw is an object whose every bare token is a literal or a strict JSON number.
local function strict_object(raw)
  if not string.find(raw, '^[ \t\n\r]*{') then return false end
  local bare = string.gsub((string.gsub(raw, '\\.', '')), '"[^"]*"', '""')
  for token in string.gmatch(bare, '[^ \t\n\r%[%]{}:,"]+') do
    if token ~= 'true' and token ~= 'false' and token ~= 'null' and not json_number(token) then
      return false
    end
  end
  return true
end

-- An integer as a record holds it: integral, 0 <= n < 2^53. nil where Python raises.
local function int(value)
  if type(value) ~= 'number' or value ~= value or value < 0 or value >= MAX_INT
      or value ~= math.floor(value) then
    return nil
  end
  return value
end

-- A Lua table that cjson decoded from a JSON array of n items (keys exactly 1..n).
local function array(value)
  if type(value) ~= 'table' then return nil end
  local n = 0
  for _ in pairs(value) do n = n + 1 end
  if n ~= #value then return nil end
  return n
end

local function buckets_of(value)
  local n = array(value)
  if not n or n > MAX_BUCKETS then return nil end
  local out = {}
  for i = 1, n do
    local item = value[i]
    if array(item) ~= 4 then return nil end
    local b = {int(item[1]), int(item[2]), int(item[3]), int(item[4])}
    if not (b[1] and b[2] and b[3] and b[4]) then return nil end
    out[i] = b
  end
  return out
end

local function text(value)
  if type(value) ~= 'string' or #value > MAX_TEXT then return nil end
  return value
end

-- flexiai 0.1's record (no schema): float seconds, failures in a tumbling window.
local function migrate(doc)
  local function ms(name)
    local value = doc[name]
    if value == nil then return 0 end
    if type(value) ~= 'number' or value ~= value or value == math.huge
        or value == -math.huge then
      return nil
    end
    return int(math.floor(value * 1000 + 0.5))
  end
  local out = fresh()
  local state = doc.state == nil and 'CLOSED' or doc.state
  if type(state) ~= 'string' or not STATES[state] then return nil end
  out.state = state
  local pairs_ = {version = 'version', run = 'failures', probes_in_flight = 'probes_in_flight',
                  successes = 'successes'}
  for field, name in pairs(pairs_) do
    local value = doc[name] == nil and 0 or int(doc[name])
    if value == nil then return nil end
    out[field] = value
  end
  local times = {run_started_at = 'window_started_at', opened_at = 'opened_at',
                 open_until = 'open_until', probe_lease_until = 'probe_lease_until',
                 updated_at = 'updated_at'}
  for field, name in pairs(times) do
    local value = ms(name)
    if value == nil then return nil end
    out[field] = value
  end
  local by = doc.updated_by == nil and '' or text(doc.updated_by)
  if by == nil then return nil end
  out.updated_by = by
  return out
end

-- A decoded record as BreakerRecord.from_doc takes it; nil where Python raises ValueError.
local function parse(doc)
  if type(doc) ~= 'table' then return nil end
  if doc.schema == nil then return migrate(doc) end
  local schema = int(doc.schema)
  if not schema then return nil end
  if schema < SCHEMA then return nil end
  local record = fresh()
  record.schema = schema
  local state = doc.state
  if state ~= nil then
    if type(state) ~= 'string' or not STATES[state] then return nil end
    record.state = state
  end
  local names = INTS
  if schema > SCHEMA then names = {'version', 'opened_at', 'open_until'} end
  for _, name in ipairs(names) do
    if doc[name] ~= nil then
      local value = int(doc[name])
      if value == nil then return nil end
      record[name] = value
    end
  end
  if schema > SCHEMA then return record end
  if doc.buckets ~= nil then
    record.buckets = buckets_of(doc.buckets)
    if not record.buckets then return nil end
  end
  if doc.opened_because ~= nil then
    local reason = doc.opened_because
    if type(reason) ~= 'string' or not REASONS[reason] then return nil end
    record.opened_because = reason
  end
  if doc.updated_by ~= nil then
    record.updated_by = text(doc.updated_by)
    if not record.updated_by then return nil end
  end
  return record
end

-- The stored string, or nil and whether the key holds another type. GET under pcall: a key
-- of another type is garbage, any other error (an ACL denial, say) is the caller's to see.
local function get(key)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' and raw['err'] then
    if not string.find(tostring(raw['err']), 'WRONGTYPE', 1, true) then
      redis.call('GET', key) -- raises the same error, as a script error
    end
    return nil, true
  end
  return raw or nil, false
end

-- The stored string, the record, and whether it was garbage (or jumped ahead of known).
local function read(key, known)
  local raw, wrongtype = get(key)
  if wrongtype then return nil, fresh(), true end
  if not raw then return nil, fresh(), false end
  if #raw > MAX_BYTES or not strict_object(raw) then return nil, fresh(), true end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok then return nil, fresh(), true end
  local record = parse(doc)
  if not record then return nil, fresh(), true end
  if known and record.version > known + MAX_VERSION_STEP then return nil, fresh(), true end
  return raw, record, false
end

-- json.dumps(s, ensure_ascii=False): only '"', '\' and control characters are escaped.
local ESCAPES = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                 ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
local function json_string(s)
  return '"' .. string.gsub(s, '[%z\1-\31"\\]', function(c)
    return ESCAPES[c] or string.format('\\u%04x', string.byte(c))
  end) .. '"'
end

local function n(value) return string.format('%d', value) end

-- BreakerRecord.to_json(), byte for byte.
local function encode(r)
  local buckets = {}
  for i, b in ipairs(r.buckets) do
    buckets[i] = '[' .. n(b[1]) .. ',' .. n(b[2]) .. ',' .. n(b[3]) .. ',' .. n(b[4]) .. ']'
  end
  return '{"schema":' .. n(r.schema) .. ',"state":"' .. r.state .. '","version":'
    .. n(r.version) .. ',"run":' .. n(r.run) .. ',"run_started_at":' .. n(r.run_started_at)
    .. ',"buckets":[' .. table.concat(buckets, ',') .. '],"opened_at":' .. n(r.opened_at)
    .. ',"open_until":' .. n(r.open_until) .. ',"opened_because":"' .. r.opened_because
    .. '","probes_in_flight":' .. n(r.probes_in_flight) .. ',"probe_lease_until":'
    .. n(r.probe_lease_until) .. ',"successes":' .. n(r.successes) .. ',"updated_by":'
    .. json_string(r.updated_by) .. ',"updated_at":' .. n(r.updated_at) .. '}'
end

local function opened(record, now, open_for, reason)
  local out = fresh(record.version)
  out.state, out.opened_at, out.open_until, out.opened_because = 'OPEN', now, now + open_for,
    reason
  return out
end

-- Whether two records are equal (Python's dataclass ==), without encoding either.
local SCALARS = {'schema', 'state', 'version', 'run', 'run_started_at', 'opened_at',
                 'open_until', 'opened_because', 'probes_in_flight', 'probe_lease_until',
                 'successes', 'updated_by', 'updated_at'}
local function same(a, b)
  for _, name in ipairs(SCALARS) do
    if a[name] ~= b[name] then return false end
  end
  if #a.buckets ~= #b.buckets then return false end
  for i, x in ipairs(a.buckets) do
    local y = b.buckets[i]
    if x[1] ~= y[1] or x[2] ~= y[2] or x[3] ~= y[3] or x[4] ~= y[4] then return false end
  end
  return true
end

-- _machine._count: a tally (and a failure) joins the run and the current bucket.
local function count(record, policy, now, tally, failures)
  local run, run_started_at = record.run, record.run_started_at
  if run > 0 and tally.age and now - tally.age > run_started_at then
    run, run_started_at = 0, 0
  end
  if failures > 0 then
    if run == 0 then run_started_at = now end
    run = run + failures
  end
  local current = now - now % policy.bucket
  local oldest = now - policy.failure_window
  local calls, failed, slow = tally.successes + failures, failures, tally.slow
  local buckets = {}
  for _, b in ipairs(record.buckets) do
    if b[1] == current then
      calls, failed, slow = calls + b[2], failed + b[3], slow + b[4]
    elseif b[1] > oldest then
      buckets[#buckets + 1] = b
    end
  end
  buckets[#buckets + 1] = {current, calls, failed, slow}
  local out = copy(record)
  out.run, out.run_started_at, out.buckets = run, run_started_at, buckets
  return out
end

-- _machine._trips: why the counted record opens, or nil.
local function trips(record, policy, now, failed)
  if failed and record.run >= policy.failure_threshold then return 'consecutive_failures' end
  local calls, failures, slow = 0, 0, 0
  for _, b in ipairs(record.buckets) do
    if b[1] > now - policy.failure_window then
      calls, failures, slow = calls + b[2], failures + b[3], slow + b[4]
    end
  end
  if calls < policy.minimum_calls then return nil end
  if failures * 100 >= policy.failure_rate_threshold * calls then return 'failure_rate' end
  if policy.slow_call_duration > 0 and slow * 100 >= policy.slow_call_rate_threshold * calls then
    return 'slow_calls'
  end
  return nil
end

-- _machine._apply: the new record (before version/updated_*), granted, event.
local function apply(record, op, policy, now, open_for, tally)
  local state = record.state
  if record.schema ~= SCHEMA then return record, op == 'acquire' and state == 'CLOSED', nil end
  if op == 'reset' then return fresh(record.version), false, 'CLOSED' end

  if op == 'trip' then
    local duration = math.min(open_for or policy.recovery_timeout, policy.max_open_for)
    if state == 'OPEN' and record.open_until >= now + duration then return record, false, nil end
    return opened(record, now, duration, 'retry_after'), false, 'OPENED'
  end

  if op == 'acquire' then
    if state == 'CLOSED' then return record, true, nil end
    if state == 'OPEN' then
      -- _machine.open_deadline: never later than the longest the policy opens for.
      local longest = math.max(policy.recovery_timeout, policy.max_open_for)
      local deadline = math.min(record.open_until, record.opened_at + longest)
      if record.opened_at > now + CLOCK_TOLERANCE then deadline = now end
      if now < deadline then return record, false, nil end
      local out = copy(record)
      out.state, out.probes_in_flight = 'HALF_OPEN', 1
      out.probe_lease_until, out.successes = now + policy.probe_lease_ttl, 0
      return out, true, 'HALF_OPEN'
    end
    local in_flight = 0
    local lease_until = math.min(record.probe_lease_until,
                                 record.updated_at + policy.probe_lease_ttl)
    if record.updated_at > now + CLOCK_TOLERANCE then lease_until = now end
    if now < lease_until then in_flight = record.probes_in_flight end
    if in_flight >= policy.half_open_max_calls then return record, false, nil end
    local out = copy(record)
    out.probes_in_flight, out.probe_lease_until = in_flight + 1, now + policy.probe_lease_ttl
    return out, true, nil
  end

  if op == 'success' then
    if state ~= 'HALF_OPEN' then return record, false, nil end
    local successes = record.successes + 1
    if successes >= policy.success_threshold then return fresh(record.version), false, 'CLOSED' end
    local out = copy(record)
    out.successes, out.probes_in_flight = successes, math.max(0, record.probes_in_flight - 1)
    return out, false, 'SUCCESS'
  end

  local failed = op == 'failure'
  if failed and state == 'HALF_OPEN' then
    return opened(record, now, policy.recovery_timeout, 'probe_failed'), false, 'OPENED'
  end
  if state ~= 'CLOSED' or not (failed or tally.successes > 0 or tally.slow > 0) then
    return record, false, nil
  end
  local counted = count(record, policy, now, tally, failed and 1 or 0)
  local reason = trips(counted, policy, now, failed)
  if reason then return opened(record, now, policy.recovery_timeout, reason), false, 'OPENED' end
  return counted, false, failed and 'FAILURE' or nil
end

local function optional(token)
  if token == '-' then return nil end
  return tonumber(token)
end

local worker_id, policy, state_ttl_ms, channel, prefix = ARGV[1], cjson.decode(ARGV[2]),
  tonumber(ARGV[3]), ARGV[4], ARGV[6]
local now = tonumber(ARGV[5])
if not now then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end

local reply = {n(now)}
for i, key in ipairs(KEYS) do
  local provider, spec = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  local op, successes, slow, age, open_for, known = string.match(
    spec, '^(%a+) (%d+) (%d+) ([%d-]+) ([%d-]+) ([%d-]+)$')
  local raw, record, invalid
  if op == 'read' then
    -- Only read: the caller validates the string, as it does an MGET's.
    local wrongtype
    raw, wrongtype = get(key)
    invalid = wrongtype
  else
    raw, record, invalid = read(key, optional(known))
  end
  local flags, event, json = '0', '', raw or ''
  local granted = false
  if op ~= 'read' then
    local tally = {successes = tonumber(successes), slow = tonumber(slow), age = optional(age)}
    local new, ev
    new, granted, ev = apply(record, op, policy, now, optional(open_for), tally)
    local changed = new ~= record and not same(new, record)
    if changed then
      new = copy(new)
      new.version, new.updated_by, new.updated_at = record.version + 1, worker_id, now
      if new.version >= MAX_INT then new.version = 1 end -- _record.next_version
      event = ev or ''
    elseif op == 'reset' then
      event = ev or '' -- announced even when unchanged: every worker reads the key again
    end
    if changed or invalid then
      json = encode(new)
      -- The TTL counts from the last deadline the record still carries, so an OPEN breaker
      -- (say a long Retry-After) never expires back to CLOSED before it is due. SET
      -- replaces a key of any type, so garbage needs no DEL first.
      local live_for = math.max(0, math.max(new.open_until, new.probe_lease_until) - now)
      redis.call('SET', key, json, 'PX', n(state_ttl_ms + math.min(live_for, 1e12)))
    end
    flags = changed and '1' or '0'
  end
  flags = flags .. (granted and '1' or '0') .. (invalid and '1' or '0')
  if event ~= '' and channel ~= '' then
    -- flexiai.circuit_breaker._wire wire format: the record inside is the stored JSON (or,
    -- for a reset of an absent key, the fresh record it reads as).
    local body = json
    if body == '' then body = encode(record) end
    redis.call('PUBLISH', channel, '{"v":2,"prefix":' .. json_string(prefix) .. ',"type":"'
      .. event .. '","provider":'
      .. json_string(provider) .. ',"worker_id":' .. json_string(worker_id) .. ',"ts":'
      .. n(now) .. ',"record":' .. body .. '}')
  end
  reply[#reply + 1] = flags
  reply[#reply + 1] = event
  reply[#reply + 1] = json
end
return reply
