-- wrk script: every request carries another device's key (and its ETag for polls), from a file
-- of "key etag" lines. Requests are formatted once in init so wrk spends its time sending.
-- wrk -s bench/load.lua URL -- FILE METHOD [BODY]
local requests, n, i = {}, 0, 0

function init(args)
  local method, body = args[2] or "GET", args[3]
  for line in io.lines(args[1]) do
    local key, etag = line:match("^(%S+)%s+(%S+)$")
    local headers = { Authorization = "Bearer " .. key }
    if method == "GET" then
      headers["If-None-Match"] = etag
    else
      headers["Content-Type"] = "application/json"
    end
    n = n + 1
    requests[n] = wrk.format(method, nil, headers, body)
  end
  -- Threads start at different devices.
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16))
  i = math.random(n) - 1
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "socket_errors": %d,' ..
    ' "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
