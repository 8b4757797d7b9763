-- Process start, connect (version negotiation included), one ping.
local d = require("myrmex.docker").connect()
assert(d:ping())
