-- GET /, and every OVERRUN_EVERY-th request (default: none) GET /alloc/OVERRUN_KIB instead:
-- past cella's arena, so cella answers it 500 while the other requests must keep their latency.
local every = tonumber(os.getenv("OVERRUN_EVERY") or "0")
local kib = os.getenv("OVERRUN_KIB") or "2048"
local count = 0
request = function()
  count = count + 1
  if every > 0 and count % every == 0 then
    return wrk.format(nil, "/alloc/" .. kib)
  end
  return wrk.format(nil, "/")
end
