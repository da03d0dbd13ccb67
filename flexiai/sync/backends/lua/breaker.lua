-- One breaker operation, applied atomically: the Redis twin of circuit_breaker/_machine.py.
-- Keep the two in step; tests/sync runs randomized sequences through both and compares.
--
-- KEYS[1]  the provider's state hash ({prefix}:state:{provider})
-- ARGV     op, provider, worker_id, open_for ('' = none), publish ('1'/'0'), channel,
--          state_ttl_ms, failure_threshold, failure_window, recovery_timeout,
--          half_open_max_calls, success_threshold, probe_lease_ttl, max_open_for
-- Returns  {changed, granted, event, now, invalid, name1, value1, ...}, every item a string:
--          flags are '1'/'0', event is '' for none, now is the server's TIME in seconds, and
--          the fields are the record after the operation in BreakerRecord.to_fields() form.
--
-- Times are the server's clock (TIME), so workers' clocks never have to agree. A key that
-- holds garbage (another type, or a field Python's from_fields would reject) is treated as
-- a fresh CLOSED record, overwritten, and reported with invalid = '1'.

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

-- Python's int() and float() as from_fields uses them; nil where Python raises ValueError.
local function parse(kind, raw)
  if kind == 'string' then return raw end
  if kind == 'state' then return STATES[raw] and raw or nil end
  if kind == 'int' then
    if not string.find(raw, '^%s*[-+]?%d+%s*$') then return nil end
    local number = tonumber(raw)
    if math.abs(number) >= 2^53 then return nil end -- beyond a double's exact integers
    return number
  end
  if string.find(raw, '[xX]') then return nil end -- Lua reads hex, Python's float() does not
  local number = tonumber(raw)
  if number == nil or number ~= number or number == math.huge or number == -math.huge then
    return nil
  end
  return number
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

local function read(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then return fresh(), false end
  if kind ~= 'hash' then return fresh(), true end
  local flat = redis.call('HGETALL', key)
  local record = fresh()
  for i = 1, #flat, 2 do
    local name = flat[i]
    local field_kind = KIND[name]
    if field_kind then
      local value = parse(field_kind, flat[i + 1])
      if value == nil then return fresh(), true end
      record[name] = value
    end
  end
  return record, false
end

local function encode(record)
  local flat, fields = {}, {}
  for _, name in ipairs(FIELDS) do
    local kind, value = KIND[name], record[name]
    if kind == 'float' then
      value = float_text(value)
    elseif kind == 'int' then
      value = string.format('%d', value)
    end
    flat[#flat + 1] = name
    flat[#flat + 1] = value
    fields[name] = value
  end
  return flat, fields
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

local record, invalid = read(key)
local new, granted, event = apply(record, op, policy, now, open_for)
local changed = not same(new, record)
if changed then
  new = copy(new)
  new.version, new.updated_by, new.updated_at = record.version + 1, worker_id, now
else
  new, event = record, nil
end

local flat, fields = encode(new)
if changed or invalid then
  if invalid then redis.call('DEL', key) end
  redis.call('HSET', key, unpack(flat))
  -- The TTL counts from the last deadline the record still carries, so an OPEN breaker
  -- (say a long Retry-After) never expires back to CLOSED before it is due.
  local live_for = math.max(new.open_until, new.probe_lease_until) - now
  live_for = math.min(math.max(0, live_for), 1e9)
  redis.call('PEXPIRE', key, string.format('%d', state_ttl_ms + math.ceil(live_for * 1000)))
end

if event and publish == '1' then
  -- flexiai.sync.events wire format; numbers written by hand, as cjson keeps 14 digits.
  redis.call('PUBLISH', channel, '{"v":1,"type":' .. cjson.encode(event)
    .. ',"provider":' .. cjson.encode(provider) .. ',"worker_id":' .. cjson.encode(worker_id)
    .. ',"ts":' .. float_text(now) .. ',"version":' .. fields.version
    .. ',"record":' .. cjson.encode(fields) .. '}')
end

return {changed and '1' or '0', granted and '1' or '0', event or '', float_text(now),
        invalid and '1' or '0', unpack(flat)}
