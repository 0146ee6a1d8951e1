-- bench/intake.lua — wrk script for bench/intake: every request creates a
-- call (POST /api/v1/calls) for a random E.164 number, with metadata, as a
-- client would send it.  done() prints the figures on "BENCH key=value"
-- lines for bench/intake to read.  Optional environment:
--   INTAKE_API_KEY   sent as "Authorization: Bearer <key>"

local counter = 0
local nthreads = 0

-- Number the threads, so that each draws a different random sequence.
function setup(thread)
    nthreads = nthreads + 1
    thread:set("thread_no", nthreads)
end

function init(args)
    math.randomseed(os.time() * 1000 + (thread_no or 0))
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    local key = os.getenv("INTAKE_API_KEY")
    if key and key ~= "" then
        wrk.headers["Authorization"] = "Bearer " .. key
    end
end

function request()
    counter = counter + 1
    -- +1 NPA-NXX-XXXX: first digit 2-9 as in the NANP, so always valid E.164
    local to = string.format("+1%d%02d%07d", math.random(2, 9), math.random(0, 99),
                             math.random(0, 9999999))
    local body = string.format(
        '{"to":"%s","scriptId":"bench-intake","metadata":{"campaign":"bench","seq":%d}}',
        to, counter)
    return wrk.format(nil, "/api/v1/calls", nil, body)
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format("BENCH requests=%d duration_us=%d\n", summary.requests, summary.duration))
    io.write(string.format("BENCH err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
                           e.connect, e.read, e.write, e.status, e.timeout))
    for _, p in ipairs({ 50, 90, 99, 99.9 }) do
        io.write(string.format("BENCH p%s_us=%d\n", tostring(p), latency:percentile(p)))
    end
    io.write(string.format("BENCH max_us=%d mean_us=%.0f\n", latency.max, latency.mean))
end
