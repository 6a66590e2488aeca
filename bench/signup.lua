-- wrk script: valid JSON signups, each with a unique address (thread number + counter).
local counter = 0
local thread_id = 0
accepted = 0  -- global: done() reads it from each thread
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  thread_id = id
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"email":"load-%d-%d@example.com","first_name":"Load","timezone":"Europe/Berlin","consent":true}',
    thread_id, counter)
  return wrk.format("POST", "/subscribe", {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  if status == 202 then accepted = accepted + 1 end
end

done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + (tonumber(thread:get("accepted")) or 0) end
  io.write("ACCEPTED " .. tostring(total) .. "\n")
  io.write("P50_US " .. tostring(math.floor(latency:percentile(50))) .. "\n")
  io.write("P99_US " .. tostring(math.floor(latency:percentile(99))) .. "\n")
end
