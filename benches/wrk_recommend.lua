-- wrk script for `POST /v1/recommend` (issue 7, benches/serve_bench.sh). HIST is either a number or a
-- file of real histories:
-- - a number: each thread builds 1,000 request bodies up front, each a history of HIST item ids drawn
--   uniformly from the run's best/items.json (as `seqrec-load` does);
-- - a file (benches/ml1m_histories.sh writes one): one history per line, item ids separated by spaces,
--   oldest first. Ids missing from items.json are dropped and each history keeps its last 200 ids
--   (what a client sends a model whose window is 200); the histories are sent in a seeded shuffle.
-- k = 10. wrk counts answers other than 2xx/3xx itself ("Non-2xx or 3xx responses").
--
--   wrk -t1 -c64 -d8s --latency -s benches/wrk_recommend.lua http://127.0.0.1:18080 -- RUN/best/items.json 200
--   wrk ... -- RUN/best/items.json /tmp/ml1m-histories.txt

local bodies = {}
local next_body = 0

local unpack = table.unpack or unpack -- wrk embeds LuaJIT (Lua 5.1)

local function body(h)
  return '{"history": [' .. table.concat(h, ",") .. '], "k": 10}'
end

function init(args)
  local path, hist = args[1], args[2] or "50"
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  local text = f:read("*a")
  f:close()
  local items, known = {}, {}
  for id in text:gmatch('"([^"]*)"') do
    items[#items + 1] = id
    known[id] = true
  end
  assert(#items > 0, path .. " holds no item ids")
  math.randomseed(7 + (wrk.thread and wrk.thread:get("id") or 0))
  if tonumber(hist) then
    for b = 1, 1000 do
      local h = {}
      for i = 1, tonumber(hist) do h[i] = '"' .. items[math.random(#items)] .. '"' end
      bodies[b] = body(h)
    end
    return
  end
  for line in io.lines(hist) do
    local all = {}
    for id in line:gmatch("%S+") do
      if known[id] then all[#all + 1] = '"' .. id .. '"' end
    end
    if #all > 0 then bodies[#bodies + 1] = body({unpack(all, math.max(1, #all - 199))}) end
  end
  assert(#bodies > 0, hist .. " holds no history with a known item")
  for i = #bodies, 2, -1 do
    local j = math.random(i)
    bodies[i], bodies[j] = bodies[j], bodies[i]
  end
end

function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/v1/recommend", {["Content-Type"] = "application/json"}, bodies[next_body])
end
