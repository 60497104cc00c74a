-- wrk script for benches/soak.sh: a mix of plain and conditional GETs, and a
-- check of every response. wrk does not tell which request a response
-- answers, so each response is checked against itself: a 200 must carry the
-- exact body of the tag it carries; a 304 must carry a known tag and no body.
--
-- Arguments: the directory holding <n>.path, <n>.body and <n>.etag for the
-- resources 1..count, and count.

local resources = {}
local by_tag = {}
local counter = 0
-- Globals, so that done() can read them from each thread.
ok200, ok304, bad = 0, 0, 0
first_bad = nil

local function read(path)
    local file = assert(io.open(path, "rb"))
    local data = file:read("*a")
    file:close()
    return data
end

init = function(args)
    local dir, count = args[1], tonumber(args[2])
    for i = 1, count do
        local r = {
            path = read(dir .. "/" .. i .. ".path"):gsub("%s+$", ""),
            body = read(dir .. "/" .. i .. ".body"),
            etag = read(dir .. "/" .. i .. ".etag"):gsub("%s+$", ""),
        }
        resources[i] = r
        by_tag[r.etag] = r
    end
end

request = function()
    counter = counter + 1
    local r = resources[(counter % #resources) + 1]
    local kind = math.floor(counter / #resources) % 4
    local headers = {}
    if kind == 1 then
        headers["If-None-Match"] = r.etag                    -- 304
    elseif kind == 2 then
        headers["If-None-Match"] = '"stale", W/"older"'      -- 200
    elseif kind == 3 then
        headers["If-None-Match"] = '"other", ' .. r.etag     -- 304
    end
    return wrk.format("GET", r.path, headers)
end

local function fail(why)
    bad = bad + 1
    if first_bad == nil then first_bad = why end
end

response = function(status, headers, body)
    local tag = headers["etag"]
    local r = tag and by_tag[tag]
    if r == nil then
        fail("status " .. status .. " with unknown tag " .. tostring(tag))
    elseif status == 200 then
        if body == r.body then ok200 = ok200 + 1 else fail("wrong body for " .. r.path) end
    elseif status == 304 then
        if body == "" then ok304 = ok304 + 1 else fail("a 304 with a body") end
    else
        fail("status " .. status)
    end
end

local threads = {}

setup = function(thread)
    table.insert(threads, thread)
end

done = function(summary, latency, requests)
    local t200, t304, tbad, first = 0, 0, 0, nil
    for _, thread in ipairs(threads) do
        t200 = t200 + thread:get("ok200")
        t304 = t304 + thread:get("ok304")
        tbad = tbad + thread:get("bad")
        first = first or thread:get("first_bad")
    end
    io.write(string.format("checked: %d responses: %d full 200s with the right body, %d 304s, %d bad\n",
        t200 + t304 + tbad, t200, t304, tbad))
    if first then io.write("first bad: " .. first .. "\n") end
    io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
        summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
