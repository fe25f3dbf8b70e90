-- oauth2.static: the client of a static token, and what every client has.
--
-- A User API token (api_token, made in the dashboard) is already a
-- bearer token: no token endpoint, nothing cached, stored or refreshed.
-- It is served as it is, and a 401 is the caller's answer (oauth2.api
-- does not try again: there is nothing to renew).  The same token for
-- nginx (oauth2.openresty) is here too: the header injected, a 401 logged
-- once per worker.  And the base of both kinds of oauth2.client: API
-- requests, events, close and the one guard of a closed client.

local core = require "oauth2.core"
local options = require "oauth2.options"
local bearer = require "oauth2.bearer"

local error, setmetatable, getmetatable, rawset, tostring, type, pcall =
      error, setmetatable, getmetatable, rawset, tostring, type, pcall
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

-- --------------------------------------------------------- every client

local Base = {}
_M.Base = Base

--- Tell the on_event hook: it never sees a secret or a token, and an
-- error it raises is not the caller's.
function Base:emit(event, info)
    local hook = self.on_event
    if hook then pcall(hook, event, info) end
end

-- oauth2.api, loaded on first use; it never loads a client's module.
local function api()
    return require "oauth2.api"
end

--- An authenticated API request (oauth2.api): res {status, headers, body,
-- json} or nil and an error.
function Base:request(method, target, opts)
    local call, why = api().check(self.conf, method, target, opts, self)
    if not call then error(why, 2) end
    return api().send(self, call)
end

--- An iterator over the pages of an API listing (oauth2.api).
function Base:pages(target, opts)
    local pages, why = api().pages(self, target, opts)
    if not pages then error(why, 2) end
    return pages
end

--- An iterator over the elements of `field` on every page (oauth2.api).
function Base:items(target, field, opts)
    local items, why = api().items(self, target, field, opts)
    if not items then error(why, 2) end
    return items
end

--- Close the client (idempotent) and its API connection; a caller's
-- session stays the caller's, a shared token stays for other clients.
function Base:close()
    local loaded = package.loaded["oauth2.api"]
    if loaded then loaded.close(self) end
    _M.closed(self)
end

-- ------------------------------------------------------- a static token

local Static = setmetatable({}, { __index = Base })
Static.__index = Static
Static.__close = Base.close

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

--- A client of `conf.api_token`, with a client's own options (`own`).
function _M.new(conf, own)
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
