-- wrk script for POST /pubsub/push: a wrapped Pub/Sub push envelope with a
-- fresh messageId per request, so the service decides and records each one
-- instead of answering a duplicate. DATA is the base64 GCR payload. wrk
-- itself reports "Non-2xx or 3xx responses" when any answer was not 2xx.
local data = os.getenv("DATA")
local counter = 0

function setup(thread)
  thread:set("thread_id", tostring(math.random(1, 1000000000)))
end

function request()
  counter = counter + 1
  local body = '{"message":{"data":"' .. data .. '","messageId":"wrk-' ..
    thread_id .. '-' .. counter .. '"},"subscription":"projects/benches/scripts/subscriptions/gcr"}'
  return wrk.format("POST", "/pubsub/push", {["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format("p50_ms=%.3f p99_ms=%.3f p999_ms=%.3f\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
