-- bench/dispatch.lua — wrk script for bench/dispatch: creates exactly
-- DISPATCH_CALLS calls (POST /api/v1/calls, a random E.164 number each),
-- split over wrk's DISPATCH_THREADS threads, then stops.  Once a thread has
-- sent its share of POSTs its connections only ask GET /healthz until every
-- POST was answered, so no extra call is ever created.  done() prints the
-- figures on "BENCH key=value" lines for bench/dispatch to read.
-- Environment:
--   DISPATCH_CALLS    calls to create in all (required)
--   DISPATCH_THREADS  wrk's -t (required: the shares are fixed in setup())
--   DISPATCH_SCRIPT   scriptId of the calls (default "bench-dispatch")
--   DISPATCH_API_KEY  sent as "Authorization: Bearer <key>"
--   DISPATCH_DELAY_MS pause of each connection between two POSTs (pacing;
--                     default 0: as fast as the server answers)

local nthreads = 0
local threads = {}

function setup(thread)
    local total = tonumber(os.getenv("DISPATCH_CALLS") or "0")
    local t = tonumber(os.getenv("DISPATCH_THREADS") or "1")
    nthreads = nthreads + 1
    local share = math.floor(total / t)
    if nthreads <= total % t then
        share = share + 1
    end
    thread:set("thread_no", nthreads)
    thread:set("share", share)
    table.insert(threads, thread)
end

-- per thread; globals, so that done() can read them with thread:get()
posted, created, failed = 0, 0, 0
local health_req

function init(args)
    math.randomseed(os.time() * 1000 + (thread_no or 0))
    local key = os.getenv("DISPATCH_API_KEY")
    local headers = { ["Content-Type"] = "application/json" }
    if key and key ~= "" then
        headers["Authorization"] = "Bearer " .. key
    end
    script = os.getenv("DISPATCH_SCRIPT") or "bench-dispatch"
    post_headers = headers
    health_req = wrk.format("GET", "/healthz")
    pace = tonumber(os.getenv("DISPATCH_DELAY_MS") or "0")
end

function request()
    if posted < share then
        posted = posted + 1
        -- +1 NPA-NXX-XXXX, first digit 2-9: always valid E.164
        local to = string.format("+1%d%02d%07d", math.random(2, 9), math.random(0, 99),
                                 math.random(0, 9999999))
        local body = string.format('{"to":"%s","scriptId":"%s","metadata":{"seq":%d}}',
                                   to, script, posted)
        return wrk.format("POST", "/api/v1/calls", post_headers, body)
    end
    return health_req
end

-- Once the share is sent, idle: one /healthz per connection and second
-- until bench/dispatch sees every call stored and stops wrk (wrk runs for
-- its whole -d otherwise, whatever thread:stop() does).
function delay()
    if posted >= share then
        return 1000
    end
    return pace
end

-- /healthz answers 200; a POST answers 201, or an error (>= 300)
function response(status, headers, body)
    if status == 201 then
        created = created + 1
    elseif status ~= 200 then
        failed = failed + 1
    end
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH requests=%d duration_us=%d\n", summary.requests, summary.duration))
    for i, t in ipairs(threads) do
        io.write(string.format("BENCH posted_%d=%d created_%d=%d failed_%d=%d\n", i,
                               t:get("posted"), i, t:get("created"), i, t:get("failed")))
    end
    io.write(string.format("BENCH err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
                           e.connect, e.read, e.write, e.status, e.timeout))
    for _, p in ipairs({ 50, 99 }) do
        io.write(string.format("BENCH p%s_us=%d\n", tostring(p), latency:percentile(p)))
    end
end
