return {
  description = "Print one line",
  run = function() print("ready") end,
}
