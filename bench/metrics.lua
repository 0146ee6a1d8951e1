-- bench/metrics.lua — wrk script for bench/metrics: one endpoint per wrk
-- process, asked in a loop on every connection.  GET as is; POST creates a
-- call (POST /api/v1/calls) for a random E.164 number, with metadata.
-- Counts the answers by status; done() prints the figures on
-- "BENCH key=value" lines for bench/metrics to read.  Environment:
--   METRICS_METHOD    GET (default) or POST
--   METRICS_PATH      the request target (default /metrics)
--   METRICS_RATE      requests per second of each wrk thread (default 0: no
--                     pacing, each connection asks again as soon as it has
--                     its answer).  Paced, the thread keeps one schedule, a
--                     request every 1/RATE s, and each request takes the next
--                     free time on it: a fixed rate as long as a connection
--                     is free when its time comes, fewer when every
--                     connection is still waiting for an answer (no burst
--                     to catch up afterwards).
--   METRICS_SCRIPT    scriptId of the created calls (default "bench-metrics")
--   METRICS_API_KEY   sent as "Authorization: Bearer <key>"

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")

-- CLOCK_MONOTONIC, in milliseconds
local function now_ms()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local nthreads = 0

function setup(thread)
    nthreads = nthreads + 1
    thread:set("thread_no", nthreads)
    table.insert(threads, thread)
end

-- per thread; globals, so that done() can read them with thread:get()
n2xx, n201, nother, others, seq = 0, 0, 0, "", 0
local other_status = {}
local method, path, interval, next_ms, script, headers, fixed

function init(args)
    math.randomseed(os.time() * 1000 + (thread_no or 0))
    method = os.getenv("METRICS_METHOD") or "GET"
    path = os.getenv("METRICS_PATH") or "/metrics"
    local rate = tonumber(os.getenv("METRICS_RATE") or "0")
    interval = rate > 0 and 1000 / rate or 0
    next_ms = 0
    script = os.getenv("METRICS_SCRIPT") or "bench-metrics"
    headers = {}
    local key = os.getenv("METRICS_API_KEY")
    if key and key ~= "" then
        headers["Authorization"] = "Bearer " .. key
    end
    if method == "POST" then
        headers["Content-Type"] = "application/json"
    else
        fixed = wrk.format(method, path, headers)
    end
end

function request()
    if fixed then
        return fixed
    end
    seq = seq + 1
    -- +1 NPA-NXX-XXXX, first digit 2-9 as in the NANP: always valid E.164
    local to = string.format("+1%d%02d%07d", math.random(2, 9), math.random(0, 99),
                             math.random(0, 9999999))
    local body = string.format('{"to":"%s","scriptId":"%s","metadata":{"campaign":"bench","seq":%d}}',
                               to, script, seq)
    return wrk.format(method, path, headers, body)
end

function delay()
    if interval == 0 then
        return 0
    end
    local now = now_ms()
    local at = math.max(next_ms, now)
    next_ms = at + interval
    return math.floor(at - now + 0.5)
end

function response(status, hdrs, body)
    if status >= 200 and status < 300 then
        n2xx = n2xx + 1
        if status == 201 then
            n201 = n201 + 1
        end
    else
        nother = nother + 1
        other_status[status] = (other_status[status] or 0) + 1
        -- "status:count,…", rebuilt on each (rare) non-2xx answer
        local parts = {}
        for s, n in pairs(other_status) do
            table.insert(parts, s .. ":" .. n)
        end
        others = table.concat(parts, ",")
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    local ok, created, other, statuses = 0, 0, 0, {}
    for _, t in ipairs(threads) do
        ok = ok + t:get("n2xx")
        created = created + t:get("n201")
        other = other + t:get("nother")
        local o = t:get("others")
        if o ~= "" then
            table.insert(statuses, o)
        end
    end
    io.write(string.format("BENCH requests=%d duration_us=%d\n", summary.requests, summary.duration))
    io.write(string.format("BENCH answered_2xx=%d answered_201=%d answered_other=%d\n",
                           ok, created, other))
    io.write(string.format("BENCH other_statuses=%s\n",
                           #statuses > 0 and table.concat(statuses, ",") or "-"))
    io.write(string.format("BENCH err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
                           e.connect, e.read, e.write, e.status, e.timeout))
    for _, p in ipairs({ 50, 90, 99 }) do
        io.write(string.format("BENCH p%s_us=%d\n", tostring(p), latency:percentile(p)))
    end
    io.write(string.format("BENCH max_us=%d mean_us=%.0f\n", latency.max, latency.mean))
end
