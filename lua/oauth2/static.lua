-- oauth2.static: the client of a static token, and the closed client.
--
-- A User API token (api_token, made in the dashboard) is already a
-- bearer token: no token endpoint, nothing cached, stored or refreshed.
-- It is served as it is, and a 401 is the caller's answer (oauth2.api
-- does not try again: there is nothing to renew).  It is an oauth2.client
-- for API requests (request, pages, items come from it); this file holds
-- what differs.  The same token for nginx (oauth2.openresty) is here too:
-- the header injected, a 401 logged once per worker.  And the one guard
-- of a closed client, of either kind.

local core = require "oauth2.core"
local options = require "oauth2.options"
local bearer = require "oauth2.bearer"

local error, setmetatable, getmetatable, rawset, tostring, type =
      error, setmetatable, getmetatable, rawset, tostring, type
local format = string.format
local ngx = ngx -- luacheck: ignore (nil outside OpenResty)

local _M = { _VERSION = core._VERSION }

local function no_op() end

-- Any method of a closed client raises at its caller's line (but close,
-- which is idempotent, and stats).
local function closed_use()
    error("oauth2: use of a closed client", 2)
end

-- The closed form of each kind of client, by its methods.
local closed_kinds = setmetatable({}, { __mode = "k" })

local function closed_text(self)
    return self.closed_text
end

local function closed_kind(methods)
    local kind = closed_kinds[methods]
    if not kind then
        kind = { __close = no_op, __tostring = closed_text }
        kind.__index = function(_, name)
            if name == "close" then return no_op end
            if name == "stats" then return methods.stats end
            if methods[name] ~= nil then return closed_use end
            return nil
        end
        closed_kinds[methods] = kind
    end
    return kind
end

--- Close a client of either kind: from now on it refuses every use.
function _M.closed(self)
    local methods = getmetatable(self).__index
    if type(methods) ~= "table" then return end -- closed already
    local text = tostring(self):gsub(" state=.*$", " state=closed")
    rawset(self, "closed_text", text)
    rawset(self, "token", nil)
    setmetatable(self, closed_kind(methods))
end

local Static = {}
Static.__index = Static

--- The token object, as it is.
function Static:token()
    self.hits = self.hits + 1
    return self.static_token
end

--- "Bearer <api_token>".
function Static:header()
    self.hits = self.hits + 1
    return self.static_header
end

--- Nothing to drop, cache or forget: a static token is the same after a
-- 401, and lives in no store.
function Static.invalidate() return false end
Static.forget = Static.invalidate
function Static.cached() return nil end

function Static:stats()
    return { hits = self.hits, fetches = 0, refreshes = 0, retries = 0, failures = 0,
             stale = 0, invalidations = 0, store_errors = 0 }
end

function Static:__tostring()
    return format("oauth2.client host=%s api_token state=static",
        options.url_origin(self.conf.url))
end

--- A client of `conf.api_token`, with a client's own options (`own`);
-- `Client` (oauth2.client's methods) lends it the API requests.
function _M.new(conf, own, Client)
    if getmetatable(Static) == nil then
        setmetatable(Static, { __index = Client })
        Static.__close = Client.close
    end
    return setmetatable({
        conf = conf,
        static = true,
        static_token = bearer.new { access_token = conf.api_token, token_type = "Bearer" },
        static_header = bearer.header(conf.api_token),
        hits = 0,
        on_event = own.on_event or nil,
        aid = own.aid or nil,
        headers = own.headers or nil,
        pace = own.pace,
    }, Static)
end

-- ---------------------------------------------------------------- nginx

local Nginx = {}
Nginx.__index = Nginx

function Nginx:header() return self.value end

function Nginx:authorize()
    ngx.req.set_header("Authorization", self.value)
    return true
end

Nginx.invalidate = function() return false end
Nginx.warm = function() return true end

--- For header_filter_by_lua: an upstream 401 is the token's end, said
-- once per worker (only a new token from the dashboard, and a reload,
-- replace it); nothing is dropped.
function Nginx:purge_on_401()
    if ngx.status ~= 401 then return false end
    self.rejections = self.rejections + 1
    if self.rejections == 1 then
        ngx.log(ngx.ERR, "oauth2: the API answered 401 to the User API token (api_token): it "
            .. "is sent as it is until it is replaced (a new one from the dashboard, and a "
            .. "reload)")
    end
    return false
end

function Nginx:stats()
    return { static = true, has_token = true, rejections = self.rejections }
end

function Nginx:__tostring()
    return format("oauth2.openresty host=%s api_token", self.conf.api_url)
end

--- oauth2.openresty's token for `conf.api_token`.
function _M.nginx(conf)
    return setmetatable({ conf = conf, value = bearer.header(conf.api_token),
                          rejections = 0 }, Nginx)
end

return _M
