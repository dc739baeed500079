-- smallfiles.lua: a wrk script that spreads requests over N files, as
-- zload -pathfmt FMT -npaths N does, so wrk gives every server the same
-- access pattern as the native sections: each thread cycles through all
-- the paths in order, the threads starting at evenly spaced offsets.
--
--   wrk -t2 -c64 -d3s --latency -s smallfiles.lua http://HOST:PORT -- N [FMT] [THREADS]
--
-- N defaults to 1000, FMT to /small/%04d.bin, THREADS (wrk's -t, for the
-- offsets) to 2. Every request is formatted once, in init, with wrk's
-- own headers (so -H "Connection: close" applies to each of them).

local nthreads = 0

function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
end

local reqs, i

function init(args)
   local n = tonumber(args[1]) or 1000
   local fmt = args[2] or "/small/%04d.bin"
   local t = tonumber(args[3]) or 2
   reqs = {}
   for k = 0, n - 1 do
      reqs[k + 1] = wrk.format(nil, string.format(fmt, k))
   end
   i = math.floor((tid or 0) * n / t) % n
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end
