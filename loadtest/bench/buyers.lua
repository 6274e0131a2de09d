-- wrk script: each request is sent as a different buyer, cycling through BUYERS (a file written
-- by mint.py: "<user> <jwt> <ticket>" per line). Each wrk thread starts at its own offset.
--   BUYERS=buyers.txt METHOD=GET wrk -s buyers.lua http://127.0.0.1:8080/sales/1/queue
local buyers, n, i = {}, 0, 0
local method = os.getenv("METHOD") or "GET"
local counter = 0

function setup(thread)
  thread:set("offset", counter)
  counter = counter + 1
end

function init(args)
  for line in io.lines(os.getenv("BUYERS")) do
    local user, jwt, ticket = line:match("^(%S+) (%S+) (%S+)$")
    n = n + 1
    buyers[n] = { "Bearer " .. jwt, ticket }
  end
  i = math.floor(n / 2) * (offset or 0)
end

function request()
  i = i % n + 1
  local b = buyers[i]
  local headers = { ["Authorization"] = b[1] }
  if b[2] ~= "-" then headers["X-Queue-Ticket"] = b[2] end
  return wrk.format(method, nil, headers)
end
