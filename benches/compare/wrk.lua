-- wrk script of the proxy comparison: every request carries the dummy in Authorization; with
-- BODY_FILE set it is a POST of that file's bytes. done() prints one RESULT line for run.sh.
local body_file = os.getenv("BODY_FILE")
wrk.headers["Host"] = "bench.test"
wrk.headers["Authorization"] = "Bearer sk-dummy-openai"
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/octet-stream"
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d errors=%d non2xx=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
