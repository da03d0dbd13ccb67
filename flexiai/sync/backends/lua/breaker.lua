-- One breaker operation, applied atomically: the Redis twin of circuit_breaker/_machine.py.
-- Keep the two in step; tests/sync runs randomized sequences through both and compares.
--
-- KEYS[1]  the provider's state string ({prefix}:state:{provider})
-- ARGV     op, provider, worker_id, open_for ('' = none), publish ('1'/'0'), channel,
--          state_ttl_ms, failure_threshold, failure_window, recovery_timeout,
--          half_open_max_calls, success_threshold, probe_lease_ttl, max_open_for
-- Returns  {changed, granted, event, now, invalid, record}, every item a string: flags are
--          '1'/'0', event is '' for none, now is the server's TIME in seconds, and record is
--          the stored JSON after the operation (BreakerRecord.to_json(), byte for byte).
--
-- Times are the server's clock (TIME), so workers' clocks never have to agree. A key that
-- holds garbage (another type, or JSON Python's BreakerRecord.from_json would reject) is
-- treated as a fresh CLOSED record, overwritten, and reported with invalid = '1'. Fields
-- this version does not know are kept (values re-encoded), so an older worker writing
-- during a rolling upgrade does not drop a newer one's fields.

local unpack = unpack or table.unpack

local FIELDS = {'state', 'failures', 'window_started_at', 'opened_at', 'open_until',
                'probes_in_flight', 'probe_lease_until', 'successes', 'version',
                'updated_by', 'updated_at'}
local KIND = {state = 'state', failures = 'int', window_started_at = 'float',
              opened_at = 'float', open_until = 'float', probes_in_flight = 'int',
              probe_lease_until = 'float', successes = 'int', version = 'int',
              updated_by = 'string', updated_at = 'float'}
local STATES = {CLOSED = true, OPEN = true, HALF_OPEN = true}

local function fresh(version)
  return {state = 'CLOSED', failures = 0, window_started_at = 0, opened_at = 0,
          open_until = 0, probes_in_flight = 0, probe_lease_until = 0, successes = 0,
          version = version or 0, updated_by = '', updated_at = 0}
end

local function copy(record)
  local out = {}
  for name, value in pairs(record) do out[name] = value end
  return out
end

local function same(a, b)
  for _, name in ipairs(FIELDS) do
    if a[name] ~= b[name] then return false end
  end
  return true
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

-- One decoded field as from_json takes it; nil where Python raises ValueError.
local function valid(kind, value)
  if kind == 'state' then return type(value) == 'string' and STATES[value] and value or nil end
  if kind == 'string' then return type(value) == 'string' and value or nil end
  if type(value) ~= 'number' or value ~= value or value == math.huge or value == -math.huge then
    return nil
  end
  if kind == 'int' and (value ~= math.floor(value) or math.abs(value) >= 2^53) then
    return nil -- not integral, or beyond a double's exact integers
  end
  return value
end

-- Python's repr(float): the shortest of 15, 16 or 17 significant digits that reads back
-- exactly, with '.0' on whole numbers. Lua's tostring would keep only 14 digits.
local function float_text(x)
  local text
  for _, digits in ipairs({15, 16, 17}) do
    text = string.format('%.' .. digits .. 'g', x)
    if tonumber(text) == x then break end
  end
  if not string.find(text, '[.eni]') then text = text .. '.0' end
  return text
end

-- json.dumps(s, ensure_ascii=False): only '"', '\' and control characters are escaped.
local ESCAPES = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                 ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}
local function json_string(s)
  return '"' .. string.gsub(s, '[%z\1-\31"\\]', function(c)
    return ESCAPES[c] or string.format('\\u%04x', string.byte(c))
  end) .. '"'
end

-- A field this version does not know, written back as it was read (numbers as Python would).
local function extra_text(value)
  local kind = type(value)
  if kind == 'string' then return json_string(value) end
  if kind == 'number' then
    if value == math.floor(value) and math.abs(value) < 2^53 then
      return string.format('%d', value)
    end
    return float_text(value)
  end
  if kind == 'boolean' then return tostring(value) end
  if value == cjson.null then return 'null' end
  return cjson.encode(value)
end

-- The stored record, its unknown fields as ',"name":value...' text, and whether it was
-- garbage. GET under pcall: a key of another type is garbage, any other error (an ACL
-- denial, say) is the caller's to see.
local function read(key)
  local raw = redis.pcall('GET', key)
  if type(raw) == 'table' and raw['err'] then
    if not string.find(tostring(raw['err']), 'WRONGTYPE', 1, true) then
      redis.call('GET', key) -- raises the same error, as a script error
    end
    return fresh(), '', true
  end
  if not raw then return fresh(), '', false end
  if not strict_object(raw) then return fresh(), '', true end
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' then return fresh(), '', true end
  local record, extras = fresh(), {}
  for name, value in pairs(doc) do
    local kind = KIND[name]
    if kind then
      value = valid(kind, value)
      if value == nil then return fresh(), '', true end
      record[name] = value
    else
      extras[#extras + 1] = ',' .. json_string(tostring(name)) .. ':' .. extra_text(value)
    end
  end
  return record, table.concat(extras), false
end

-- BreakerRecord.to_json() and, for the event, BreakerRecord.to_fields().
local function encode(record, extras)
  local parts, fields = {}, {}
  for _, name in ipairs(FIELDS) do
    local kind, value = KIND[name], record[name]
    local text
    if kind == 'float' then
      value = float_text(value)
      text = value
    elseif kind == 'int' then
      value = string.format('%d', value)
      text = value
    else
      text = json_string(value)
    end
    parts[#parts + 1] = '"' .. name .. '":' .. text
    fields[name] = value
  end
  return '{' .. table.concat(parts, ',') .. extras .. '}', fields
end

local function opened(record, now, open_for)
  local out = copy(record)
  out.state, out.failures, out.window_started_at = 'OPEN', 0, 0
  out.opened_at, out.open_until = now, now + open_for
  out.probes_in_flight, out.probe_lease_until, out.successes = 0, 0, 0
  return out
end

-- _machine._apply: returns the new record (before version/updated_*), granted, event.
local function apply(record, op, policy, now, open_for)
  local state = record.state
  if op == 'reset' then return fresh(record.version), false, 'CLOSED' end

  if op == 'trip' then
    local seconds = math.min(open_for or policy.recovery_timeout, policy.max_open_for)
    if state == 'OPEN' and record.open_until >= now + seconds then return record, false, nil end
    return opened(record, now, seconds), false, 'OPENED'
  end

  if op == 'failure' then
    if state == 'HALF_OPEN' then
      return opened(record, now, policy.recovery_timeout), false, 'OPENED'
    end
    if state == 'OPEN' then return record, false, nil end
    local failures, started
    if record.failures == 0 or now - record.window_started_at >= policy.failure_window then
      failures, started = 1, now
    else
      failures, started = record.failures + 1, record.window_started_at
    end
    if failures >= policy.failure_threshold then
      return opened(record, now, policy.recovery_timeout), false, 'OPENED'
    end
    local out = copy(record)
    out.failures, out.window_started_at = failures, started
    return out, false, 'FAILURE'
  end

  if op == 'acquire' then
    if state == 'CLOSED' then return record, true, nil end
    if state == 'OPEN' then
      if now < record.open_until then return record, false, nil end
      local out = copy(record)
      out.state, out.probes_in_flight = 'HALF_OPEN', 1
      out.probe_lease_until, out.successes = now + policy.probe_lease_ttl, 0
      return out, true, 'HALF_OPEN'
    end
    local in_flight = 0
    if now < record.probe_lease_until then in_flight = record.probes_in_flight end
    if in_flight >= policy.half_open_max_calls then return record, false, nil end
    local out = copy(record)
    out.probes_in_flight, out.probe_lease_until = in_flight + 1, now + policy.probe_lease_ttl
    return out, true, nil
  end

  -- success
  if state ~= 'HALF_OPEN' then return record, false, nil end
  local successes = record.successes + 1
  if successes >= policy.success_threshold then return fresh(record.version), false, 'CLOSED' end
  local out = copy(record)
  out.successes, out.probes_in_flight = successes, math.max(0, record.probes_in_flight - 1)
  return out, false, 'SUCCESS'
end

local key = KEYS[1]
local op, provider, worker_id, open_for_arg, publish, channel = unpack(ARGV, 1, 6)
local state_ttl_ms = tonumber(ARGV[7])
local policy = {
  failure_threshold = tonumber(ARGV[8]), failure_window = tonumber(ARGV[9]),
  recovery_timeout = tonumber(ARGV[10]), half_open_max_calls = tonumber(ARGV[11]),
  success_threshold = tonumber(ARGV[12]), probe_lease_ttl = tonumber(ARGV[13]),
  max_open_for = tonumber(ARGV[14]),
}
local open_for = nil
if open_for_arg ~= '' then open_for = tonumber(open_for_arg) end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local record, extras, invalid = read(key)
local new, granted, event = apply(record, op, policy, now, open_for)
local changed = not same(new, record)
if changed then
  new = copy(new)
  new.version, new.updated_by, new.updated_at = record.version + 1, worker_id, now
else
  new, event = record, nil
end

local json, fields = encode(new, extras)
if changed or invalid then
  -- The TTL counts from the last deadline the record still carries, so an OPEN breaker
  -- (say a long Retry-After) never expires back to CLOSED before it is due. SET replaces
  -- a key of any type, so garbage needs no DEL first.
  local live_for = math.max(new.open_until, new.probe_lease_until) - now
  live_for = math.min(math.max(0, live_for), 1e9)
  redis.call('SET', key, json, 'PX', string.format('%d', state_ttl_ms + math.ceil(live_for * 1000)))
end

if event and publish == '1' then
  -- flexiai.sync.events wire format; numbers written by hand, as cjson keeps 14 digits.
  redis.call('PUBLISH', channel, '{"v":1,"type":' .. cjson.encode(event)
    .. ',"provider":' .. cjson.encode(provider) .. ',"worker_id":' .. cjson.encode(worker_id)
    .. ',"ts":' .. float_text(now) .. ',"version":' .. fields.version
    .. ',"record":' .. cjson.encode(fields) .. '}')
end

return {changed and '1' or '0', granted and '1' or '0', event or '', float_text(now),
        invalid and '1' or '0', json}
