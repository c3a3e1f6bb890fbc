-- wrk script for W5: single byte ranges of $E2E_LEN bytes at random, unaligned offsets inside
-- the object $E2E_PATH of $E2E_SIZE bytes: "Range: bytes=X-(X+LEN-1)".
local size = tonumber(os.getenv("E2E_SIZE"))
local len = tonumber(os.getenv("E2E_LEN") or "1048576")
local path = os.getenv("E2E_PATH")

local threads = 0
function setup(thread)
  thread:set("seed", os.time() + 7919 * threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(seed or os.time())
  math.random(); math.random()
end

function request()
  local off = math.random(0, size - len)
  return wrk.format("GET", path, { ["Range"] = "bytes=" .. off .. "-" .. (off + len - 1) })
end
