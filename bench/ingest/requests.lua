-- wrk script for the ingest benchmark: replays pre-signed requests written by run.py.
--
--   wrk -t T -c C -d <send+tail>s --latency -s bench/ingest/requests.lua URL -- \
--       FILE T SEND_SECONDS once|wrap
--
-- FILE holds complete HTTP/1.1 requests (request line, headers, body) as run.py formatted and
-- signed them with hookyard's own signing code: a first line "hookyard-bench-requests 1",
-- then for every request a line with its length in bytes followed by exactly that many bytes.
-- The file is kept as ONE Lua string and each request is cut out of it when it is sent:
-- building 10^5 similar request strings up front makes LuaJIT 2.1's string interning
-- quadratic (its hash samples a few fixed positions, which are the same in every request).
--
-- Each wrk thread takes a disjoint slice of FILE (threads are numbered in setup()), so with
-- "once" no request is ever sent twice. With "wrap" a thread cycles through its slice (only
-- for the bare endpoint, which does not care about uniqueness).
--
-- Drain instead of cut-off: a thread sends for SEND_SECONDS (from its first request), then
-- delay() parks every connection as soon as its answer is in, so no request is in flight when
-- wrk's -d timer stops the run (-d must be SEND_SECONDS plus a tail longer than the slowest
-- answer). Every request sent is then answered and counted, and the 200s can be compared
-- exactly with the rows the server stored. Requests/s is measured here, over the window from
-- the first request sent to the last answer received (wrk's own figure also counts the idle
-- tail). A thread that runs out of requests in "once" mode stops early and says so.

local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } hookyard_timespec;
int clock_gettime(int clk_id, hookyard_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("hookyard_timespec")

local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
   return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

local PARK_MS = 3600 * 1000 -- "later" for a parked connection: past the end of any run

-- Per-thread counters: globals, so that done() can read them with thread:get().
sent = 0          -- requests handed to wrk (request() calls)
responses = 0     -- answers received
ok200 = 0
ok2xx = 0
non2xx = 0
duplicates = 0    -- 200 answers saying {"duplicate":true} (hookyard; must stay 0)
statuses = {}     -- status code -> count
t_first = 0       -- CLOCK_MONOTONIC seconds: first request of this thread
t_last = 0        -- last answer of this thread
exhausted = 0     -- 1 when a "once" thread ran out of requests before SEND_SECONDS
slice_size = 0
parked = 0        -- connections parked after the send window

-- ---------------------------------------------------------------- main state: numbering

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

-- ---------------------------------------------------------------- thread state

local data = ""        -- the whole FILE
local starts = {}      -- this thread's slice: where each request starts in `data` ...
local stops = {}       -- ... and ends
local position = 1
local wrap = false
local send_seconds = 0
local deadline = nil

function init(args)
   local path = args[1]
   local thread_count = tonumber(args[2])
   send_seconds = tonumber(args[3])
   wrap = args[4] == "wrap"
   if not path or not thread_count or not send_seconds then
      error("usage: -- FILE THREADS SEND_SECONDS once|wrap")
   end
   local file = assert(io.open(path, "rb"))
   data = file:read("*a")
   file:close()
   local eol = string.find(data, "\n", 1, true)
   if not eol or string.sub(data, 1, eol - 1) ~= "hookyard-bench-requests 1" then
      error(path .. " is not a request file written by bench/ingest/run.py")
   end
   local all_starts, all_stops = {}, {}
   local pos = eol + 1
   while pos <= #data do
      local nl = string.find(data, "\n", pos, true)
      local length = tonumber(string.sub(data, pos, nl - 1))
      all_starts[#all_starts + 1] = nl + 1
      all_stops[#all_stops + 1] = nl + length
      pos = nl + length + 1
   end
   local total = #all_starts
   local first = math.floor(thread_index * total / thread_count) + 1
   local last = math.floor((thread_index + 1) * total / thread_count)
   for i = first, last do
      starts[#starts + 1] = all_starts[i]
      stops[#stops + 1] = all_stops[i]
   end
   slice_size = #starts
   if slice_size == 0 then
      error("thread " .. thread_index .. " got no requests from " .. path)
   end
end

function delay()
   local t = now()
   if deadline == nil then
      t_first = t
      deadline = t + send_seconds
   end
   if t >= deadline then
      parked = parked + 1
      return PARK_MS
   end
   if position > slice_size and not wrap then
      exhausted = 1
      parked = parked + 1
      return PARK_MS
   end
   return 0
end

function request()
   if deadline == nil then
      -- wrk calls request() once before the run to check the script (script_verify_request):
      -- that request is never sent, so it is neither counted nor used up.
      return string.sub(data, starts[1], stops[1])
   end
   if position > slice_size then
      -- "wrap": cycle. "once": only reached after a socket error made wrk resend without
      -- asking delay(); resend the last request (the server answers it as a duplicate).
      position = wrap and 1 or slice_size
      if not wrap then exhausted = 1 end
   end
   local r = string.sub(data, starts[position], stops[position])
   position = position + 1
   sent = sent + 1
   return r
end

function response(status, headers, body)
   responses = responses + 1
   t_last = now()
   statuses[status] = (statuses[status] or 0) + 1
   if status >= 200 and status < 300 then
      ok2xx = ok2xx + 1
      if status == 200 then
         ok200 = ok200 + 1
         if string.find(body, '"duplicate":true', 1, true) then
            duplicates = duplicates + 1
         end
      end
   else
      non2xx = non2xx + 1
   end
end

-- ---------------------------------------------------------------- main state: report

function done(summary, latency, rates)
   local total = {sent = 0, responses = 0, ok200 = 0, ok2xx = 0, non2xx = 0, duplicates = 0,
                  exhausted = 0, slice_size = 0, parked = 0}
   local codes = {}
   local first, last = nil, nil
   for _, thread in ipairs(threads) do
      for key, _ in pairs(total) do
         total[key] = total[key] + (thread:get(key) or 0)
      end
      for code, count in pairs(thread:get("statuses") or {}) do
         codes[code] = (codes[code] or 0) + count
      end
      local f, l = thread:get("t_first"), thread:get("t_last")
      if f and f > 0 and (first == nil or f < first) then first = f end
      if l and l > 0 and (last == nil or l > last) then last = l end
   end
   local window = (first and last and last > first) and (last - first) or 0
   local out = {}
   local function add(key, value, fmt)
      out[#out + 1] = string.format('"%s":' .. (fmt or "%d"), key, value)
   end
   for _, key in ipairs({"sent", "responses", "ok200", "ok2xx", "non2xx", "duplicates",
                         "exhausted", "slice_size", "parked"}) do
      add(key, total[key])
   end
   add("threads", #threads)
   add("window_s", window, "%.6f")
   add("rps", window > 0 and total.responses / window or 0, "%.3f")
   local codes_json = {}
   for code, count in pairs(codes) do
      codes_json[#codes_json + 1] = string.format('"%d":%d', code, count)
   end
   out[#out + 1] = '"statuses":{' .. table.concat(codes_json, ",") .. "}"
   local lat = {}
   for _, p in ipairs({50, 75, 90, 99, 99.9}) do
      lat[#lat + 1] = string.format('"p%s":%d', tostring(p), latency:percentile(p))
   end
   lat[#lat + 1] = string.format('"mean":%.1f', latency.mean)
   lat[#lat + 1] = string.format('"max":%d', latency.max)
   out[#out + 1] = '"latency_us":{' .. table.concat(lat, ",") .. "}"
   local e = summary.errors
   out[#out + 1] = string.format(
      '"wrk":{"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,'
         .. '"write":%d,"status":%d,"timeout":%d}}',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout)
   io.write("HOOKYARD_BENCH_JSON {" .. table.concat(out, ",") .. "}\n")
end
