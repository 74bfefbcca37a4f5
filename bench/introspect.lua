-- wrk script: POST introspection bodies read from a file, one JSON body per line.
--
--   wrk -t1 -c32 -d10s -s bench/introspect.lua URL -- BODIES_FILE [THREADS]
--
-- Each request takes the next line, so with a file of distinct tokens no token is sent twice
-- until the file is used up; `wrapped` counts the times it was (the harness then marks the
-- "new" run invalid). With several threads, thread k takes lines k, k+T, k+2T, ...
-- Every answer is checked: one that is not HTTP 200 with "active": true counts as `inactive`,
-- so a target that rejects the tokens cannot look fast.
-- done() prints one line starting with BENCH_JSON for the harness to read.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  local nthreads = tonumber(args[2] or "1")
  local all = {}
  for line in io.lines(path) do
    if line ~= "" then
      all[#all + 1] = line
    end
  end
  bodies = {}
  for k = 1, #all do
    if (k - 1) % nthreads == id then
      bodies[#bodies + 1] = all[k]
    end
  end
  if #bodies == 0 then
    bodies = all -- fewer lines than threads: only the 'seen' file, where reuse is the point
  end
  all = nil
  n = #bodies
  if n == 0 then
    error("no bodies in " .. path)
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  i = 0
  sent = 0
  wrapped = 0
  inactive = 0
end

function request()
  i = i + 1
  if i > n then
    i = 1
    wrapped = wrapped + 1
  end
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"active"%s*:%s*true') then
    inactive = inactive + 1
  end
end

function done(summary, latency, requests)
  local sent_all, wrapped_all, inactive_all, pool = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    sent_all = sent_all + thread:get("sent")
    wrapped_all = wrapped_all + thread:get("wrapped")
    inactive_all = inactive_all + thread:get("inactive")
    pool = pool + thread:get("n")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"sent":%d,"pool":%d,"wrapped":%d,"inactive":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout,
    sent_all, pool, wrapped_all, inactive_all))
end
