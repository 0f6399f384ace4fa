-- Pipelined GET / requests, PIPELINE_DEPTH (default 16) per write.
local depth = tonumber(os.getenv("PIPELINE_DEPTH") or "16")
init = function(args)
  local requests = {}
  for i = 1, depth do requests[i] = wrk.format(nil, "/") end
  batch = table.concat(requests)
end
request = function() return batch end
