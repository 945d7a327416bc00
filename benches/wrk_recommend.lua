-- wrk script for `POST /v1/recommend` (issue 7, benches/serve_bench.sh): each thread builds 1,000
-- request bodies up front, each a history of HIST item ids drawn uniformly from the run's
-- best/items.json (as `seqrec-load` does), k = 10, and sends them in turn. wrk counts answers other
-- than 2xx/3xx itself ("Non-2xx or 3xx responses").
--
--   wrk -t1 -c64 -d8s --latency -s benches/wrk_recommend.lua http://127.0.0.1:18080 -- RUN/best/items.json 200

local bodies = {}
local next_body = 0

function init(args)
  local path, hist = args[1], tonumber(args[2] or "50")
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  local text = f:read("*a")
  f:close()
  local items = {}
  for id in text:gmatch('"([^"]*)"') do items[#items + 1] = id end
  assert(#items > 0, path .. " holds no item ids")
  math.randomseed(7 + (wrk.thread and wrk.thread:get("id") or 0))
  for b = 1, 1000 do
    local h = {}
    for i = 1, hist do h[i] = '"' .. items[math.random(#items)] .. '"' end
    bodies[b] = '{"history": [' .. table.concat(h, ",") .. '], "k": 10}'
  end
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/v1/recommend", {["Content-Type"] = "application/json"}, bodies[next_body])
end
