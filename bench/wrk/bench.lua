-- wrk script shared by every load of the benchmark suite (bench/run.ts).
-- Environment: WRK_METHOD (default GET), WRK_BODY (request body), WRK_PATHS (comma list of paths; one is
-- picked at random per request when there are several). Headers come from wrk's -H flags.
-- done() prints one line "BENCH_JSON {...}" that bench/lib/load.ts parses.

local method = os.getenv("WRK_METHOD") or "GET"
local body = os.getenv("WRK_BODY")
local paths = {}
for p in string.gmatch(os.getenv("WRK_PATHS") or "", "[^,]+") do paths[#paths + 1] = p end

wrk.method = method
if body ~= nil and body ~= "" then wrk.body = body end
if #paths == 1 then wrk.path = paths[1] end

if #paths > 1 then
  math.randomseed(os.time())
  request = function()
    return wrk.format(nil, paths[math.random(#paths)])
  end
end

-- With WRK_CODES=1, status counts per thread, merged in done() (wrk itself only counts >= 400 as errors).
-- Off by default: a response() hook makes wrk parse every header into Lua, which costs client CPU.
local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end
function init(args)
  codes = {}
end
if os.getenv("WRK_CODES") == "1" then
  response = function(status, headers, body)
    codes[status] = (codes[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    if c ~= nil then
      for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = string.format('"%d":%d', k, v) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"codes":{%s}}\n',
    summary.duration, summary.requests, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
