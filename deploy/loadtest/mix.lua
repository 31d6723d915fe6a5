-- wrk script for deploy/loadtest/run.sh SCENARIO=mix: cycles through requests for several hosts and
-- paths so that each hits a different rule of trellis-mix.toml.tmpl (and its nginx / HAProxy twins):
-- host routing, path prefixes, a header-matched canary, a 90/10 weighted split and a fixed response.
-- Every request is a GET that should answer 200.
local mix = {
  { host = "shop.test",     path = "/" },                    -- shop default action -> web
  { host = "www.shop.test", path = "/static/app.js" },       -- rule static (wildcard host)
  { host = "shop.test",     path = "/api/items" },           -- rule api: 90/10 split api-v1 / api-v2
  { host = "shop.test",     path = "/api/items/42" },        -- rule api
  { host = "shop.test",     path = "/api/cart", canary = true }, -- rule api-canary-header -> api-v2
  { host = "shop.test",     path = "/ping" },                -- fixed response, no backend
  { host = "other.example", path = "/anything" },            -- catch-all service ("*")
  { host = "www.shop.test", path = "/account/orders" },      -- shop default action
}

local requests = {}
local i = 0

function init(args)
  for k, r in ipairs(mix) do
    local headers = { ["Host"] = r.host }
    if r.canary then headers["X-Canary"] = "1" end
    requests[k] = wrk.format("GET", r.path, headers)
  end
end

function request()
  i = i % #requests + 1
  return requests[i]
end
