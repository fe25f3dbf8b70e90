-- luacheck configuration: `make lint`
std = "max"
globals = { "ngx" }
read_globals = { "jit" }
max_line_length = 100
files["spec/"] = { std = "+busted", max_line_length = 110 }
