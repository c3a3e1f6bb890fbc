-- wrk script for W1: cycle over the URL paths listed (one per line) in the file $E2E_PATHS.
-- Requests are formatted once per thread; each thread starts at a different offset.
local paths = {}
for line in io.lines(os.getenv("E2E_PATHS")) do
  if #line > 0 then paths[#paths + 1] = line end
end

local threads = 0
function setup(thread)
  thread:set("start", threads * 97)
  threads = threads + 1
end

local reqs, idx = {}, 0
function init(args)
  for i, p in ipairs(paths) do reqs[i] = wrk.format("GET", p) end
  idx = (start or 0) % #reqs
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end
