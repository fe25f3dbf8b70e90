-- Errors read well everywhere: tostring, .., error(tostring(err)), on
-- every Lua the suite runs on (5.1, 5.4, LuaJIT).

local errors = require "oauth2.error"
local core = require "oauth2.core"
local oauth2 = require "oauth2"

describe("an error", function()
    local err = errors.new { kind = "http", status = 400, code = "invalid_request",
        message = "The request is invalid",
        errors = { { field = "scope", code = "unknown", message = "unknown scope" },
                   { field = "x_tenant_id", message = "not found" } } }

    it("shows a 400's field errors in tostring", function()
        assert.equals("oauth2: http error 400 (invalid_request): The request is invalid "
            .. "[scope: unknown scope; x_tenant_id: not found]", tostring(err))
    end)

    it("concatenates on either side", function()
        assert.equals("failed: " .. tostring(err), "failed: " .. err)
        assert.equals(tostring(err) .. "!", err .. "!")
    end)

    it("raises as text with error(tostring(err)) and through assert", function()
        local ok, raised = pcall(function() error(tostring(err), 0) end)
        assert.is_false(ok)
        assert.equals(tostring(err), raised)
        ok, raised = pcall(function() assert(nil, tostring(err)) end)
        assert.is_false(ok)
        assert.matches("invalid_request", raised)
    end)

    it("of the C core concatenates and prints too", function()
        local session = core.session()
        local reply, failure = session:request { url = "http://127.0.0.1:1/", method = "POST",
                                                 timeout = 1 }
        session:close()
        assert.is_nil(reply)
        assert.matches("^oauth2%.core: network error: ", tostring(failure))
        assert.equals("got " .. tostring(failure), "got " .. failure)
    end)

    it("from a real failed call concatenates", function()
        local token, failure = oauth2.token { token_url = "http://127.0.0.1:1/token",
            client_id = "id", client_secret = "secret-for-errors", retries = 0, timeout = 1 }
        assert.is_nil(token)
        assert.matches("^failed: oauth2: network error", "failed: " .. failure)
    end)
end)
