-- needs: docker
-- Images against the real engine: builds from scratch with busybox, .dockerignore as Docker
-- applies it, failing builds, a 300 MiB context with flat memory, and the image calls. The
-- tests of the classic builder's own output (Step lines, its error text, LABEL history entries,
-- the daemon applying .dockerignore) ask for it; spec:docker_build covers BuildKit.
local docker = require("myrmex.docker")
local errors = require("myrmex.errors")
local archive = require("myrmex.core.archive")
local log = require("myrmex.log")
local dt = require("tests.support.docker")
local sh = require("tests.support.sh")

local function raised(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

local function lines_set(text)
  local set = {}
  for l in text:gmatch("[^\n]+") do set[l] = true end
  return set
end

local d
setup(function()
  d = docker.connect()
  dt.image()
end)
teardown(function() dt.cleanup() end)

local function labels(extra)
  local l = { ["myrmex.test"] = dt.run_id }
  for k, v in pairs(extra or {}) do l[k] = v end
  return l
end

-- Run a command in an image and return its stdout (exit code must be 0).
local function run_in(image, cmd)
  local c <close> = d:run_container { image = image, cmd = cmd, wait = true, network = "none",
    labels = dt.labels }
  assert.are.equal(0, c.exit_code, c.stderr)
  return c.stdout
end

describe("docker build_image", function()
  it("builds FROM scratch with tags, labels, build args and a target; logs and reports progress", function()
    local ctx = dt.context {
      Dockerfile = dt.BASE_DOCKERFILE:gsub("^FROM scratch", "FROM scratch AS first") .. table.concat({
        "ARG GREETING=unset",
        "RUN echo \"$GREETING\" > /greeting",
        "FROM scratch AS other",
        "COPY busybox /bin/busybox",
      }, "\n") .. "\n",
    }
    local tag = dt.name("build") .. ":1"
    local progress, logged = {}, {}
    local hook = function(rec) if rec.fields and rec.fields.op == "build" then logged[#logged + 1] = rec.msg end end
    local unhook = log.add_hook(hook)
    local latest = tag:gsub(":1$", ":latest")
    local img = d:build_image { context = ctx, tags = { tag, latest }, builder = "classic",
      buildargs = { GREETING = "hello from args" }, labels = labels { stage = "first" },
      target = "first", nocache = true, on_progress = function(m) progress[#progress + 1] = m end }
    unhook()
    assert.matches("^sha256:%x+$", img.id)
    assert.are.same({ tag, latest }, img.tags)
    assert.are.equal(img.id, d:inspect_image(latest).Id)
    local info = d:inspect_image(tag)
    assert.are.equal(img.id, info.Id)
    assert.are.equal("first", info.Config.Labels.stage)
    assert.are.equal("hello from args\n", run_in(tag, { "cat", "/greeting" }))
    assert.is_true(#progress > 3)
    local text = table.concat(logged, "\n")
    assert.matches("Step 1/%d+ : FROM scratch", text)
    sh.run({ "rm", "-rf", ctx })
  end)

  it("sends the context exactly as .dockerignore says", function()
    local ctx = dt.context(dt.ignore_context(dt.IMAGE))
    local outside = dt.tmpdir { private = "outside" }
    os.execute(("ln -s %s %s/escape && ln -s src/main.c %s/link"):format(outside, ctx, ctx))
    local tag = dt.name("ignore") .. ":1"
    d:build_image { context = ctx, tags = { tag }, labels = labels(), nocache = true, builder = "classic" }
    local files = lines_set(run_in(tag, { "sh", "-c", "cd /ctx && find . | sort" }))
    -- The Dockerfile was sent (the build ran) but the daemon drops it from the context because
    -- .dockerignore names it, exactly as with `docker build`.
    for _, want in ipairs { "./keep.o", "./src/main.c", "./src/secret.txt", "./build/keep/me",
      "./.dockerignore", "./run.sh", "./escape", "./link" } do
      assert.is_true(files[want] ~= nil, want .. " missing")
    end
    for _, gone in ipairs { "./x.o", "./src/deep/y.o", "./secret.txt", "./build/other",
      "./docs/a.md", "./spaced.log", "./Dockerfile" } do
      assert.is_nil(files[gone], gone .. " was sent")
    end
    local meta = run_in(tag, { "sh", "-c", "cd /ctx && stat -c '%n %a' run.sh private.key && readlink escape; readlink link" })
    assert.matches("run.sh 755", meta)
    assert.matches("private.key 600", meta)
    assert.matches(outside, meta, 1, true)      -- the link itself, not what it points to
    assert.matches("src/main.c", meta, 1, true)
    sh.run({ "rm", "-rf", ctx, outside })
  end)

  it("uses a Dockerfile from another path, inside or outside the context", function()
    local ctx = dt.context { ["sub/Build.df"] = "FROM " .. dt.IMAGE .. "\nRUN echo inside > /which\n" }
    local other = dt.tmpdir { ["Other.df"] = "FROM " .. dt.IMAGE .. "\nRUN echo outside > /which\n" }
    local t1, t2 = dt.name("df") .. ":1", dt.name("df") .. ":2"
    d:build_image { context = ctx, dockerfile = "sub/Build.df", tags = { t1 }, labels = labels() }
    d:build_image { context = ctx, dockerfile = other .. "/Other.df", tags = { t2 }, labels = labels() }
    assert.are.equal("inside\n", run_in(t1, { "cat", "/which" }))
    assert.are.equal("outside\n", run_in(t2, { "cat", "/which" }))
    sh.run({ "rm", "-rf", ctx, other })
  end)

  it("raises with the failing step and its message when a build fails mid-way", function()
    local ctx = dt.context { Dockerfile = "FROM " .. dt.IMAGE .. "\nRUN echo step one\n"
      .. "RUN echo about to fail && exit 7\nRUN echo never\n" }
    local err = raised(d.build_image, d, { context = ctx, tags = { dt.name("fail") .. ":1" },
      labels = labels(), builder = "classic" })
    assert.is_true(errors.is(err, "Engine"), tostring(err))
    assert.matches("RUN echo about to fail && exit 7", err.message, 1, true)
    assert.matches("returned a non%-zero code: 7", err.message)
    assert.are.equal(7, err.details.exit_code)
    assert.are.equal("RUN echo about to fail && exit 7", err.details.step)
    sh.run({ "rm", "-rf", ctx })
  end)

  it("reports a broken Dockerfile and a missing context as errors", function()
    local ctx = dt.context { Dockerfile = "FROM " .. dt.IMAGE .. "\nNOTACOMMAND x\n" }
    local err = raised(d.build_image, d, { context = ctx, labels = labels() })
    assert.is_true(errors.is(err), tostring(err))
    assert.matches("NOTACOMMAND", err.message:upper())
    err = raised(d.build_image, d, { context = ctx .. "/missing" })
    assert.is_true(errors.is(err, "NotFound"), tostring(err))
    assert.has_error(function() d:build_image { context = ctx, tag = "typo" } end,
      "docker.build_image: option tag: unknown key")
    sh.run({ "rm", "-rf", ctx })
  end)

  it("streams a 300 MiB context with flat memory", function()
    local ctx = dt.context { Dockerfile = "FROM " .. dt.IMAGE .. "\nCOPY small /small\n", small = "s" }
    assert(os.execute(("head -c 314572800 /dev/urandom > %s/big.bin"):format(ctx)))
    collectgarbage()
    local before = dt.peak_rss_kib()
    -- The tar upload (the file sync would not send big.bin at all: nothing copies it).
    local img = d:build_image { context = ctx, tags = { dt.name("big") .. ":1" }, labels = labels(),
      sync_context = false }
    local grown = dt.peak_rss_kib() - before
    assert.matches("^sha256:", img.id)
    if not dt.sanitized() then
      assert.is_true(grown < 16 * 1024, ("peak RSS grew by %d KiB"):format(grown))
    end
    sh.run({ "rm", "-rf", ctx })
  end)
end)

describe("docker images", function()
  local tag
  setup(function()
    local ctx = dt.context { Dockerfile = "FROM " .. dt.IMAGE .. "\nRUN echo layer > /layer\n"
      .. "RUN head -c 300000 /dev/urandom > /blob\n" }
    tag = dt.name("img") .. ":1"
    d:build_image { context = ctx, tags = { tag }, labels = labels { purpose = "images-spec" }, builder = "classic" }
    sh.run({ "rm", "-rf", ctx })
  end)

  it("lists with filters, inspects and gives history", function()
    local list = d:list_images { filters = { label = { "purpose=images-spec", dt.label_filter } } }
    assert.are.equal(1, #list)
    assert.are.same({ tag }, list[1].RepoTags)
    local hist = d:image_history(tag)
    assert.matches("LABEL", hist[1].CreatedBy) -- newest first: the builder adds labels last
    local blob
    for _, h in ipairs(hist) do if h.CreatedBy:find("head -c 300000", 1, true) then blob = h end end
    assert.is_true(blob.Size >= 300000)
    assert.is_true(d:image_exists(tag))
    assert.is_false(d:image_exists("mxt-never:1"))
  end)

  it("tags and removes tags, force and noprune", function()
    local extra = dt.name("retag") .. ":2"
    d:tag_image(tag, extra)
    assert.are.equal(d:inspect_image(tag).Id, d:inspect_image(extra).Id)
    local removed = d:remove_image(extra)
    assert.are.same({ Untagged = extra }, removed[1])
    local err = raised(d.inspect_image, d, extra)
    assert.is_true(errors.is(err, "NotFound"))
    -- an image a container uses needs force
    local c <close> = d:create_container { image = tag, labels = dt.labels }
    local third = dt.name("retag") .. ":3"
    d:tag_image(tag, third)
    local id = d:inspect_image(tag).Id
    d:remove_image(third, { noprune = true })
    assert.is_true(d:image_exists(id))
    err = raised(d.remove_image, d, id)
    assert.is_true(errors.is(err, "Conflict"), tostring(err))
  end)

  it("saves one or several images to a file or a consumer, and loads them back", function()
    local path = os.tmpname() .. ".tar"
    local n = d:save_image({ tag, dt.IMAGE }, { to = path })
    assert.is_true(n > 2000000)
    local names = {}
    local r <close> = archive.open(path)
    for e in r:entries() do names[e.path] = true end
    assert.is_true(names["manifest.json"])
    local streamed = 0
    d:save_image(tag, { on_data = function(chunk) streamed = streamed + #chunk end })
    assert.is_true(streamed > 300000)

    local copy = dt.name("loaded") .. ":1"
    d:tag_image(tag, copy)
    local one = os.tmpname() .. ".tar"
    d:save_image(copy, { to = one })
    d:remove_image(copy)
    assert.is_false(d:image_exists(copy))
    local loaded = d:load_image(one)
    assert.are.same({ copy }, loaded)
    assert.is_true(d:image_exists(copy))
    d:remove_image(copy)
    os.remove(path)
    os.remove(one)
    local err = raised(d.load_image, d, "/nonexistent.tar")
    assert.is_true(errors.is(err, "NotFound"))
  end)

  it("analyzes layer sizes", function()
    local a = d:analyze_image_size(tag)
    assert.are.equal(d:inspect_image(tag).Id, a.id)
    assert.are.equal(4, a.layer_count) -- busybox's COPY and RUN, then two RUNs here
    local sum = 0
    for _, l in ipairs(a.layers) do sum = sum + l.size end
    assert.are.equal(a.size, sum)
    assert.matches("COPY", a.layers[1].created_by)   -- oldest first: busybox
    assert.is_true(a.layers[#a.layers].empty)         -- a LABEL
    assert.is_false(a.layers[1].empty)
    local diff_ids = {}
    for _, l in ipairs(a.layers) do if l.diff_id then diff_ids[#diff_ids + 1] = l.diff_id end end
    assert.are.same(d:inspect_image(tag).RootFS.Layers, diff_ids)
    assert.is_true(a.largest.size >= 1900000) -- busybox itself
  end)

  it("prunes dangling images", function()
    local ctx = dt.context { Dockerfile = "FROM " .. dt.IMAGE .. "\nRUN echo dangling > /d\n" }
    local img = d:build_image { context = ctx, labels = labels { purpose = "prune" } }
    sh.run({ "rm", "-rf", ctx })
    local r = d:prune_images { dangling = true, filters = { label = { "purpose=prune" } } }
    local ids = {}
    for _, e in ipairs(r.deleted) do if e.Deleted then ids[e.Deleted] = true end end
    assert.is_true(ids[img.id], "the dangling image was not pruned")
    assert.is_false(d:image_exists(img.id))
  end)
end)
