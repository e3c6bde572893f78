-- wrk-post.lua - wrk script: POST /v1/messages to ringpost's HTTP API, one
-- JSON message per request, keep-alive (wrk's default).
--
--   wrk -t2 -c100 -d15s -s bench/wrk-post.lua http://127.0.0.1:PORT/v1/messages \
--       [-- KEY SIZE DOMAINS]
--
-- KEY: the bearer token (default change-me). SIZE: bytes of the JSON body
-- (default 2048; "text" is padded with 76-character lines to reach it).
-- DOMAINS: recipients cycle over userNNNNNN@d0..d(DOMAINS-1).bench.test
-- (default 4), as ringpost-blast's do. The bodies are built once per thread
-- in init(); request() hands them out in turn.
-- At the end one JSON line on stdout: {"wrk": {"requests", "duration_us",
-- "bytes", "errors": {...}, "latency_us": {"mean", "p50", "p90", "p99",
-- "p999", "max"}}}. wrk's "status" error counts non-2xx/3xx answers.

local key, size, ndomains = "change-me", 2048, 4
local reqs = {}
local n = 0

-- text - body lines of 76 characters joined by the JSON escape \n, exactly len bytes.
local function text(len)
	local line = string.rep("ringpost wrk bench ", 4):sub(1, 76)
	local parts, have = {}, 0
	while have < len do
		parts[#parts + 1] = line .. "\\n"
		have = have + 78
	end
	local t = table.concat(parts):sub(1, len)
	if t:sub(-1) == "\\" then -- never cut an escape in half
		t = t:sub(1, -2) .. "."
	end
	return t
end

function init(args)
	key = args[1] or key
	size = tonumber(args[2]) or size
	ndomains = tonumber(args[3]) or ndomains
	local headers = {
		["Authorization"] = "Bearer " .. key,
		["Content-Type"] = "application/json",
	}
	for d = 0, ndomains - 1 do
		local head = string.format('{"from":"wrk@bench.test","to":["user%06d@d%d.bench.test"],'
			.. '"subject":"ringpost wrk message %d","text":"', d, d, d)
		local body = head .. text(math.max(1, size - #head - 2)) .. '"}'
		reqs[#reqs + 1] = wrk.format("POST", nil, headers, body)
	end
end

function request()
	n = n % #reqs + 1
	return reqs[n]
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format('{"wrk": {"requests": %d, "duration_us": %d, "bytes": %d, '
		.. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
		.. '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}}\n',
		summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
		e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency:percentile(99.9), latency.max))
end
