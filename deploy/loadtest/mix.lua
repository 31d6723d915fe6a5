-- wrk driver for deploy/loadtest/run.sh SCENARIO=mix and SCENARIO=mix-post:
--
--   wrk -s mix.lua http://127.0.0.1:PORT/ -- mix.requests
--
-- cycles through the requests of a request list, one per line (`#` starts a comment):
--
--   METHOD  HOST  PATH[?QUERY]  BODY_BYTES  EXPECT  [NAME:VALUE ...]
--
-- EXPECT is what run.sh checks through each proxy before measuring it (the backend that must answer, a
-- weighted split, or =BODY for a fixed response); wrk ignores it. A body is BODY_BYTES bytes of JSON
-- ({"pad":"aaa..."}) sent as application/json unless a content-type header is given; run.sh sends the same.

local requests = {}
local i = 0

local function body_of(bytes)
  if bytes == 0 then return nil end
  if bytes < 12 then return string.rep("a", bytes) end
  return '{"pad":"' .. string.rep("a", bytes - 10) .. '"}'
end

function init(args)
  local file = args[1] or error("usage: wrk -s mix.lua URL -- REQUESTS_FILE")
  for raw in io.lines(file) do
    local line = raw:gsub("#.*$", "") -- paths never hold a '#' (a fragment is not sent)
    if line:match("%S") then
      local f = {}
      for word in line:gmatch("%S+") do f[#f + 1] = word end
      local method, host, path, bytes = f[1], f[2], f[3], tonumber(f[4])
      if not (method and host and path and bytes and f[5]) then
        error(file .. ": not METHOD HOST PATH BODY_BYTES EXPECT [NAME:VALUE...]: " .. line)
      end
      local headers, typed = { ["Host"] = host }, false
      for k = 6, #f do
        local name, value = f[k]:match("^([^:]+):(.*)$")
        if not name then error(file .. ": header " .. f[k] .. " is not NAME:VALUE") end
        headers[name] = value
        typed = typed or name:lower() == "content-type"
      end
      local body = body_of(bytes)
      if body and not typed then headers["Content-Type"] = "application/json" end
      -- wrk.format adds Content-Length for a body.
      requests[#requests + 1] = wrk.format(method, path, headers, body)
    end
  end
  if #requests == 0 then error(file .. ": no requests") end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
