-- wrk script: valid JSON signups, each with a unique address (run tag + thread number + counter).
-- wrk -s signup.lua URL -- TAG   (TAG keeps the addresses of one run apart from another's)
local counter = 0
local thread_id = 0
local tag = "load"
accepted = 0  -- globals: done() reads them from each thread
other = 0
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
  if args[1] then tag = args[1] end
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"email":"%s-%d-%d@example.com","first_name":"Load","timezone":"Europe/Berlin","consent":true}',
    tag, thread_id, counter)
  return wrk.format("POST", "/subscribe", {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end

done = function(summary, latency, requests)
  local total, others = 0, 0
  for _, thread in ipairs(threads) do
    total = total + (tonumber(thread:get("accepted")) or 0)
    others = others + (tonumber(thread:get("other")) or 0)
  end
  local e = summary.errors
  io.write("ACCEPTED " .. tostring(total) .. "\n")
  io.write("OTHER_STATUS " .. tostring(others) .. "\n")
  io.write("SOCKET_ERRORS " .. tostring(e.connect + e.read + e.write + e.timeout) .. "\n")
  io.write("P50_US " .. tostring(math.floor(latency:percentile(50))) .. "\n")
  io.write("P99_US " .. tostring(math.floor(latency:percentile(99))) .. "\n")
  io.write("MAX_US " .. tostring(math.floor(latency.max)) .. "\n")
end
