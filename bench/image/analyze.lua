-- The measured command: analyze a saved tar and print the headline figures.
local image = require("myrmex.image")
local a = image.analyze(arg[1])
print(("layers %d, size %d, files %d, efficiency %.4f, wasted %d, hidden %d"):format(#a.layers, a.size,
  a.files, a.efficiency, a.wasted_bytes, a.hidden_bytes))
