--- Streaming sha256/sha512 (OpenSSL EVP). See docs/digest.md.
local core = require("myrmex.core.digest")

local M = {}

--- A streaming hash: `digest.new("sha256"):update(a):update(b):final()` -> "sha256:hex".
---@param alg? "sha256"|"sha512"
---@return table handle with :update(s) and :final()
M.new = core.new

--- The digest of a string: "sha256:hex".
---@param s string
---@param alg? "sha256"|"sha512"
---@return string
M.string = core.string

--- The digest and size of a file, read in 64 KiB blocks; nil and a message when unreadable.
---@param path string
---@param alg? "sha256"|"sha512"
---@return string|nil digest, integer|string size_or_err
M.file = core.file

--- Base64 of a string (OpenSSL): standard with padding, or with `"url"` the URL-safe alphabet
--- without padding (RFC 4648 section 5).
---@param s string
---@param variant? "std"|"url"
---@return string
M.base64 = core.base64

--- Split "sha256:hex" into algorithm and hex; nil when malformed.
---@param d string
---@return string|nil alg, string|nil hex
function M.parse(d)
  local alg, hex = tostring(d):match("^(sha256):(%x+)$")
  if alg and #hex == 64 then return alg, hex:lower() end
  alg, hex = tostring(d):match("^(sha512):(%x+)$")
  if alg and #hex == 128 then return alg, hex:lower() end
  return nil
end

return M
