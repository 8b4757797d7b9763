--- Images (builds are in docker/build.lua): list, inspect, history, tag, remove, prune, save, load,
--- and a size analysis. Methods of the docker client; see docs/docker.md ("Images").
local json = require("myrmex.json")
local errors = require("myrmex.errors")

--- The patterns of DIR/.dockerignore, as Docker reads them: a UTF-8 BOM dropped, lines
--- trimmed, blank lines and lines starting with "#" skipped.
---@param dir string
---@return string[]
local function read_dockerignore(dir)
  local f = io.open(dir .. "/.dockerignore", "rb")
  if not f then return {} end
  local text = f:read("a")
  f:close()
  text = text:gsub("^\239\187\191", "")
  local out = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" and line:sub(1, 1) ~= "#" then out[#out + 1] = line end
  end
  return out
end

-- "repo/name:tag" -> "repo/name", "tag" (a port in the registry host is not a tag).
local function split_ref(ref)
  local repo, tag = ref:match("^(.+):([%w_][%w_.-]*)$")
  if repo and not tag:find("/", 1, true) then return repo, tag end
  return ref, nil
end

return function(Client, H)
  --- Images on the engine (GET /images/json).
  ---@param o? {all?:boolean, filters?:table, digests?:boolean}
  ---@return table[]
  function Client:list_images(o)
    o = H.options("list_images", o, H.set { "all", "filters", "digests" })
    return self:_call("list_images", nil, { path = "/images/json",
      query = { all = o.all or nil, filters = H.filters(o.filters), digests = o.digests or nil } })
  end

  --- The inspect document of an image; NotFound when there is no such image.
  ---@param ref string
  ---@return table
  function Client:inspect_image(ref)
    return (self:_call("inspect_image", ref, { path = "/images/" .. H.path(ref) .. "/json" }))
  end

  --- True when the image exists on the engine.
  ---@param ref string
  ---@return boolean
  function Client:image_exists(ref)
    local ok, err = pcall(self.inspect_image, self, ref)
    if ok then return true end
    if errors.is(err, "NotFound") then return false end
    error(err, 0)
  end

  --- The layer history of an image, newest first, as the engine gives it.
  ---@param ref string
  ---@return table[]
  function Client:image_history(ref)
    return (self:_call("image_history", ref, { path = "/images/" .. H.path(ref) .. "/history" }))
  end

  --- Tag an image: `target` is "repo[:tag]".
  ---@param ref string
  ---@param target string
  function Client:tag_image(ref, target)
    if type(target) ~= "string" then H.misuse("tag_image", "target must be repo[:tag]") end
    local repo, tag = split_ref(target)
    return self:_mutate("tag_image", ref, { target = target }, function()
      self:_call("tag_image", ref, { method = "POST", path = "/images/" .. H.path(ref) .. "/tag",
        query = { repo = repo, tag = tag } })
      return true
    end)
  end

  --- Remove an image (or one of its tags). Returns the engine's list of Untagged/Deleted.
  ---@param ref string
  ---@param o? {force?:boolean, noprune?:boolean}
  ---@return table[]
  function Client:remove_image(ref, o)
    o = H.options("remove_image", o, H.set { "force", "noprune" })
    return self:_mutate("remove_image", ref, o, function()
      return (self:_call("remove_image", ref, { method = "DELETE", path = "/images/" .. H.path(ref),
        query = { force = o.force or nil, noprune = o.noprune or nil } }))
    end)
  end

  --- Remove unused images. Returns {deleted = {...}, space_reclaimed = bytes}.
  ---@param o? {filters?:table, dangling?:boolean}
  ---@return {deleted:table[], space_reclaimed:integer}
  function Client:prune_images(o)
    o = H.options("prune_images", o, H.set { "filters", "dangling" })
    local filters = o.filters or {}
    if o.dangling ~= nil then filters.dangling = tostring(o.dangling) end
    return self:_mutate("prune_images", nil, o, function()
      local r = self:_call("prune_images", nil, { method = "POST", path = "/images/prune",
        query = { filters = next(filters) and H.filters(filters) or nil } })
      return { deleted = json.isnull(r.ImagesDeleted) and {} or r.ImagesDeleted or {},
        space_reclaimed = r.SpaceReclaimed or 0 }
    end)
  end

  --- Export one or more images as a tar (docker save), streamed to the file `to` or to
  --- `on_data(chunk)`. Returns the number of bytes.
  ---@param refs string|string[]
  ---@param o {to?:string, on_data?:fun(chunk:string)}
  ---@return integer
  function Client:save_image(refs, o)
    o = H.options("save_image", o, H.set { "to", "on_data", "timeout" })
    if type(refs) == "string" then refs = { refs } end
    if not o.to and not o.on_data then H.misuse("save_image", "give to=PATH or on_data=fn") end
    local n, out = 0, nil
    if o.to then out = assert(io.open(o.to .. ".part", "wb")) end
    local ok, err = pcall(self._stream, self, "save_image", refs[1], {
      path = "/images/get", query = { names = H.multi(refs) }, timeout = o.timeout or false,
    }, function(chunk)
      n = n + #chunk
      if out then assert(out:write(chunk)) end
      if o.on_data then return o.on_data(chunk) end
    end)
    if out then
      out:close()
      if ok then assert(os.rename(o.to .. ".part", o.to)) else os.remove(o.to .. ".part") end
    end
    if not ok then error(err, 0) end
    return n
  end

  --- The engine's save stream (a docker-archive tar of one or more images) as a source for
  --- `archive.open` or as a request body: the bytes are pulled as the reader asks for them, so
  --- nothing is written to disk and memory stays flat. Error statuses raise before returning.
  ---@param refs string|string[]
  ---@return userdata source
  function Client:save_source(refs)
    if type(refs) == "string" then refs = { refs } end
    if type(refs) ~= "table" or type(refs[1]) ~= "string" then H.misuse("save_source", "image name(s) expected") end
    self:_check_online("save_source")
    local req = self:_request_table({ path = "/images/get", query = { names = H.multi(refs) }, timeout = false })
    local s = require("myrmex.http").open_source(req)
    if s.status >= 400 then
      local text = s:read_all(65536)
      s:close()
      error(H.api_error(s.status, text, nil), 0)
    end
    return s:source()
  end

  --- Import images from a tar made by save_image / docker save. Returns the loaded
  --- references (tags, or image ids for untagged images).
  ---@param path string
  ---@return string[]
  function Client:load_image(path)
    if type(path) ~= "string" then H.misuse("load_image", "path must be a string") end
    local f = io.open(path, "rb")
    if not f then
      errors.raise({ code = "NotFound", engine = "docker", message = "no such file: " .. path }, 2)
    end
    f:close()
    return self:_mutate("load_image", path, nil, function()
      local loaded, failure = {}, nil
      self:_stream_json("load_image", path, { method = "POST", path = "/images/load",
        query = { quiet = true }, body = { file = path }, timeout = false,
        headers = { ["Content-Type"] = "application/x-tar" } }, function(msg)
        local text = type(msg.stream) == "string" and msg.stream or ""
        local ref = text:match("Loaded image: (%S+)") or text:match("Loaded image ID: (%S+)")
        if ref then loaded[#loaded + 1] = ref end
        if msg.error or msg.errorDetail then failure = msg.error or msg.errorDetail.message end
      end)
      if failure then
        errors.raise({ code = "Invalid", engine = "docker", message = "load failed: " .. tostring(failure) }, 0)
      end
      return loaded
    end)
  end

  --- Layer-by-layer sizes of an image from its history and inspect document.
  --- Returns {id, size, layers = {{created_by, size, created, empty}...} (oldest first),
  --- layer_count, largest = the biggest layer}.
  ---@param ref string
  ---@return table
  function Client:analyze_image_size(ref)
    local info = self:inspect_image(ref)
    local hist = self:image_history(ref)
    local layers, largest = {}, nil
    for i = #hist, 1, -1 do
      local h = hist[i]
      local by = json.isnull(h.CreatedBy) and "" or (h.CreatedBy or "")
      local layer = { created_by = by, size = h.Size or 0, created = h.Created,
        empty = (h.Size or 0) == 0 and by:find("#(nop)", 1, true) ~= nil }
      layers[#layers + 1] = layer
      if not largest or layer.size > largest.size then largest = layer end
    end
    local rootfs = info.RootFS and info.RootFS.Layers or {}
    -- The steps that made a filesystem layer line up with RootFS.Layers, oldest first.
    local real = {}
    for _, l in ipairs(layers) do if not l.empty then real[#real + 1] = l end end
    if #real == #rootfs then
      for i, l in ipairs(real) do l.diff_id = rootfs[i] end
    end
    return { id = info.Id, size = info.Size, layers = layers, layer_count = #rootfs,
      largest = largest }
  end

  --- The .dockerignore patterns of a context directory (exposed for tests and tools).
  Client.read_dockerignore = function(_, dir) return read_dockerignore(dir) end
end
