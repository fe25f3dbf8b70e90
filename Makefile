# Makefile - build, test, demo and install lua-oauth2.
#
#   make                      build oauth2.core for Lua 5.4
#   make LUA_VERSION=luajit   ... for LuaJIT 2.1 (OpenResty); also 5.1
#   make test                 the suite on Lua 5.4, 5.3, 5.1 and LuaJIT, ASan, valgrind
#   make demo                 fetch a token from the bundled fake endpoint
#   make install PREFIX=/usr/local DESTDIR=   (modules and bin/thousandeyes-token)
#   make uninstall            removes what make install put there (same settings)
#   make dist                 a versioned rockspec and .src.rock in build/dist
#   make deb                  Debian packages (dh-lua) in build/deb
#   make HIREDIS=no           without oauth2.redis (the Redis store outside nginx)
#
# Every setting can be overridden on the command line or from the environment.

LUA_VERSION ?= 5.4
# the release: the version of the C core, which oauth2._VERSION reports
VERSION := $(shell sed -n 's/^\#define OAUTH2_CORE_VERSION "\(.*\)"/\1/p' src/compat.h)

ifeq ($(LUA_VERSION),luajit)
LUA        ?= luajit
LUA_INCDIR ?= /usr/include/luajit-2.1
LUA_ABI    ?= 5.1
else
LUA        ?= lua$(LUA_VERSION)
LUA_INCDIR ?= /usr/include/lua$(LUA_VERSION)
LUA_ABI    ?= $(LUA_VERSION)
endif

PKG_CONFIG    ?= pkg-config
CURL_CFLAGS   ?= $(shell $(PKG_CONFIG) --cflags libcurl)
CURL_LIBS     ?= $(shell $(PKG_CONFIG) --libs libcurl)
CRYPTO_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags libcrypto)
CRYPTO_LIBS   ?= $(shell $(PKG_CONFIG) --libs libcrypto)
HIREDIS_LIBS  ?= $(shell $(PKG_CONFIG) --libs hiredis)
# oauth2.redis, hiredis's module, is built where libhiredis is found
# (HIREDIS=yes insists, HIREDIS=no leaves it out)
HIREDIS       ?= $(shell $(PKG_CONFIG) --exists hiredis && echo yes || echo no)

# the C core by job: session and response, prepared requests, error
# tables, pure text, buffers, clock, libcrypto, files
SOURCES = src/core.c src/request.c src/errors.c src/text.c src/buffer.c src/clock.c \
          src/crypto.c src/files.c
HEADERS = src/compat.h src/request.h src/errors.h src/text.h src/buffer.h src/clock.h \
          src/crypto.h src/files.h
# oauth2.redis: a Redis connection (hiredis), with the clock of deadlines
REDIS_SOURCES = src/redis.c src/clock.c

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    ?= -Wall -Wextra -Werror
ALL_CFLAGS  = $(CFLAGS) $(WARN) -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC \
              -fvisibility=hidden -I$(LUA_INCDIR) $(CURL_CFLAGS) $(CRYPTO_CFLAGS)
LDFLAGS ?=
ALL_LDFLAGS = -shared $(LDFLAGS)

BUILD  ?= build/$(LUA_VERSION)
MODULE  = $(BUILD)/oauth2/core.so
REDIS_MODULE = $(BUILD)/oauth2/redis.so
MODULES = $(MODULE) $(if $(filter yes,$(HIREDIS)),$(REDIS_MODULE))

PREFIX  ?= /usr/local
DESTDIR ?=
LUA_LIBDIR_INSTALL ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUA_SHAREDIR_INSTALL ?= $(PREFIX)/share/lua/$(LUA_ABI)

.PHONY: all build test test-one demo playground playground-nginx install uninstall dist deb clean asan valgrind bench bench-instructions bench-oneshot bench-client bench-nginx bench-fds bench-fleet bench-store-traffic soak lint fuzz

all build: $(MODULES)

$(MODULE): $(SOURCES) $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(SOURCES) $(ALL_LDFLAGS) $(CURL_LIBS) $(CRYPTO_LIBS)

$(REDIS_MODULE): $(REDIS_SOURCES) src/compat.h src/clock.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $(REDIS_SOURCES) $(ALL_LDFLAGS) $(HIREDIS_LIBS)

# The suite on LuaJIT (with nginx), Lua 5.4, 5.1 and 5.3 (with the Debian
# packages), on 5.4 under ASan and UBSan and under valgrind, and luacheck,
# summed up as one 'N passed, N failed'.  The runs are dealt out in turn to
# two lanes: this order balances them.
test:
	@sh spec/run luajit 5.4 5.1 5.3 asan:5.4 valgrind:5.4 lint

# The suite on one Lua: make test-one LUA_VERSION=5.1
test-one:
	@sh spec/run $(LUA_VERSION)

# (DEMO_PORT=N: the fake endpoint on that port, else on a free one)
demo: $(MODULES)
	$(LUA) examples/demo.lua $(DEMO_PORT)

# The fake token endpoint and API over HTTPS on PORT, with the exports to
# point the library, the CLI and the example nginx at it; Ctrl-C stops it.
PORT ?= 8443
# API_LIMIT=N: past N API requests a minute, 429 with the rate-limit headers
API_LIMIT ?=
playground: $(MODULES)
	@$(LUA) examples/playground.lua $(PORT) "$(API_LIMIT)"

# The playground and nginx with examples/nginx.conf pointed at it, on
# NGINX_PORT (needs nginx and its lua module: sh .ci/deps dev).
NGINX_PORT ?= 8080
playground-nginx: $(MODULES)
	@$(MAKE) -s LUA_VERSION=luajit build
	@$(LUA) examples/playground.lua $(PORT) "$(API_LIMIT)" $(NGINX_PORT)

# (every path quoted: a PREFIX or DESTDIR with a space stays one path)
install: $(MODULES)
	install -d "$(DESTDIR)$(LUA_LIBDIR_INSTALL)/oauth2" "$(DESTDIR)$(LUA_SHAREDIR_INSTALL)/oauth2/store"
	install -m 0755 $(MODULES) "$(DESTDIR)$(LUA_LIBDIR_INSTALL)/oauth2/"
	install -m 0644 lua/oauth2.lua "$(DESTDIR)$(LUA_SHAREDIR_INSTALL)/oauth2.lua"
	install -m 0644 lua/oauth2/*.lua "$(DESTDIR)$(LUA_SHAREDIR_INSTALL)/oauth2/"
	install -m 0644 lua/oauth2/store/*.lua "$(DESTDIR)$(LUA_SHAREDIR_INSTALL)/oauth2/store/"
	install -d "$(DESTDIR)$(PREFIX)/bin"
	sed '1s|.*|#!/usr/bin/env $(LUA)|' bin/thousandeyes-token > "$(DESTDIR)$(PREFIX)/bin/thousandeyes-token"
	chmod 0755 "$(DESTDIR)$(PREFIX)/bin/thousandeyes-token"

# Everything make install put there, for the same LUA_VERSION, PREFIX and
# DESTDIR; the command-line tool only when it runs this Lua (a later
# install for another Lua owns it now).  A file a Debian package owns
# (make uninstall PREFIX=/usr over lua-oauth2's files) is left, and said:
# apt removes what apt installed.
uninstall:
	@lib="$(DESTDIR)$(LUA_LIBDIR_INSTALL)"; share="$(DESTDIR)$(LUA_SHAREDIR_INSTALL)"; \
	owned() { [ -z "$(DESTDIR)" ] && command -v dpkg >/dev/null && dpkg -S "$$1" >/dev/null 2>&1; }; \
	kept=0; \
	remove() { [ -e "$$1" ] || return 0; \
	    if owned "$$1"; then kept=1; echo "$$1 belongs to a Debian package: left in place"; \
	    else rm -f "$$1"; fi; }; \
	remove "$$lib/oauth2/core.so"; remove "$$lib/oauth2/redis.so"; \
	for module in oauth2.lua $$(cd lua && ls oauth2/*.lua oauth2/store/*.lua); do \
	    remove "$$share/$$module"; \
	done; \
	rmdir "$$share/oauth2/store" "$$share/oauth2" "$$lib/oauth2" 2>/dev/null || true; \
	cli="$(DESTDIR)$(PREFIX)/bin/thousandeyes-token"; \
	if [ -f "$$cli" ] && owned "$$cli"; then kept=1; echo "$$cli belongs to a Debian package: left in place"; \
	elif [ -f "$$cli" ] && [ "$$(head -n 1 "$$cli")" = "#!/usr/bin/env $(LUA)" ]; then \
	    echo "rm -f $$cli"; rm -f "$$cli"; \
	elif [ -f "$$cli" ]; then echo "$$cli runs another Lua: left in place"; fi; \
	[ "$$kept" = 0 ] || echo "(remove packaged files with apt-get remove lua-oauth2 thousandeyes-token)"

# A release without a public home yet: in build/dist, the source archive
# of HEAD, lua-oauth2-$(VERSION)-1.rockspec and the Redis one, and the
# .src.rock of each, which `luarocks install --deps-mode=none FILE`
# installs offline.  RELEASE_URL is where the archive will be published
# (a URL ending in /); without it the rockspecs name the archive alone,
# which only the .src.rock files carry (docs/release.md).
RELEASE_URL ?=
DIST = build/dist
dist:
	@command -v zip >/dev/null || { echo "make dist needs zip (apt-get install zip)"; exit 1; }
	@git diff --quiet HEAD -- || echo "note: the archive is HEAD; uncommitted changes are not in it"
	@rm -rf $(DIST) && mkdir -p $(DIST)
	git archive --prefix=lua-oauth2-$(VERSION)/ -o $(DIST)/lua-oauth2-$(VERSION).tar.gz HEAD
	@for rock in lua-oauth2 lua-oauth2-redis; do \
	    spec=$$rock-$(VERSION)-1.rockspec; \
	    sed -e 's|^version = "scm-1"|version = "$(VERSION)-1"|' \
	        -e 's|^   url = "git+.*|   url = "$(RELEASE_URL)lua-oauth2-$(VERSION).tar.gz",\n   dir = "lua-oauth2-$(VERSION)",|' \
	        -e 's|^   "lua-oauth2",|   "lua-oauth2 == $(VERSION)",|' \
	        rockspec/$$rock-scm-1.rockspec > $(DIST)/$$spec || exit 1; \
	    (cd $(DIST) && zip -q -X $$rock-$(VERSION)-1.src.rock $$spec lua-oauth2-$(VERSION).tar.gz) || exit 1; \
	done
	@ls -1 $(DIST)/*

# Debian packages, built by dh-lua as Debian's own lua-cjson is, from the
# committed files of HEAD (as make dist): lua-oauth2 (the modules and oauth2.core for
# Lua 5.1, which LuaJIT and nginx load, 5.3 and 5.4), lua-oauth2-redis
# and thousandeyes-token.  Needs the contributor packages (.ci/deps dev).
DEB = build/deb
DEB_BUILD_OPTIONS ?= noddebs
deb:
	@dpkg-query -W -f='$${Status}' dh-lua 2>/dev/null | grep -q "ok installed" \
	    || { echo "make deb needs dh-lua (sh .ci/deps dev)"; exit 1; }
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version); [ "$${v%-*}" = "$(VERSION)" ] \
	    || { echo "debian/changelog is at $$v, the core at $(VERSION)"; exit 1; }
	@git diff --quiet HEAD -- && [ -z "$$(git ls-files --others --exclude-standard src lua bin debian)" ] \
	    || echo "note: the packages are built from HEAD; uncommitted and untracked files are not in them"
	@rm -rf $(DEB) && mkdir -p $(DEB)/lua-oauth2-$(VERSION)
	@git archive HEAD src lua bin debian LICENSE README.md CHANGELOG.md \
	    | tar -x -C $(DEB)/lua-oauth2-$(VERSION)
	@echo "dpkg-buildpackage (log: $(DEB)/build.log)"
	@# (no variable of this make reaches dh-lua's: it builds every Lua)
	@cd $(DEB)/lua-oauth2-$(VERSION) && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u LUA_VERSION \
	    DEB_BUILD_OPTIONS="$(DEB_BUILD_OPTIONS)" \
	    dpkg-buildpackage -b -us -uc > ../build.log 2>&1 || { tail -n 40 ../build.log; exit 1; }
	@ls -1 $(DEB)/*.deb

# Static checks of the Lua code (Debian package lua-check).
lint:
	@luacheck --no-color -q lua bin/thousandeyes-token spec bench examples .busted

# lua-oauth2 side by side with peer clients (run bench/setup first: it
# installs the peers; the tests never need them).
build/bench/ceiling: bench/clients/ceiling.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -o $@ $< $(CURL_CFLAGS) $(CURL_LIBS)

bench: build/bench/ceiling
	@$(MAKE) -s LUA_VERSION=5.4 build && $(MAKE) -s LUA_VERSION=luajit build
	@lua5.4 bench/run.lua

# Only callgrind's instructions per exchange: the ceiling and lua-oauth2 on
# Lua 5.4 and LuaJIT (steady on a busy machine; needs valgrind only).
bench-instructions: build/bench/ceiling
	@$(MAKE) -s LUA_VERSION=5.4 build && $(MAKE) -s LUA_VERSION=luajit build
	@BENCH_ONLY=instructions lua5.4 bench/run.lua

# One-shot calls, oauth2.token(opts) per request, against libcurl with a
# new easy handle per request: paired rates and instructions per call.
bench-oneshot: build/bench/ceiling
	@$(MAKE) -s LUA_VERSION=5.4 build && $(MAKE) -s LUA_VERSION=luajit build
	@BENCH_ONLY=oneshot lua5.4 bench/run.lua

# The cached client:token() hot path (memory and file store) against a
# table lookup + os.time().
bench-client:
	@$(MAKE) -s LUA_VERSION=5.4 build && $(MAKE) -s LUA_VERSION=luajit build
	@echo "| interpreter | client:token() ns/call, memory | same, file store | table + os.time() ns/call | memory / baseline | file / baseline |"
	@echo "| --- | --- | --- | --- | --- | --- |"
	@lua5.4 bench/client_hot_path.lua
	@luajit bench/client_hot_path.lua

# oauth2.openresty in nginx: injection throughput (2 and 4 workers), fetch
# latency against plain LuaJIT, and requests during an endpoint outage
# (wrk comes from bench/setup: a bench tool, not a test one).
bench-nginx:
	@command -v wrk >/dev/null || { echo "make bench-nginx needs wrk: sh bench/setup"; exit 1; }
	@$(MAKE) -s LUA_VERSION=luajit build
	@luajit bench/nginx_inject.lua

# Token requests of 10,000 nodes over 24 h (memory, shared dict, Redis;
# virtual time: the real client and policy, nothing sleeps).
bench-fleet:
	@$(MAKE) -s LUA_VERSION=5.4 build
	@lua5.4 bench/fleet_sim.lua

# A fleet (3 nginx nodes, 6 processes, one Redis) under steady traffic for
# an hour (SOAK_SECONDS): answers, token requests, memory at start and end.
soak:
	@$(MAKE) -s LUA_VERSION=luajit build
	@luajit bench/soak.lua

# Redis commands a process sends per second against its credentials.
bench-store-traffic:
	@$(MAKE) -s LUA_VERSION=5.4 build
	@lua5.4 bench/store_traffic.lua

# Sockets and memory held by clients and one-shot calls dropped without
# close(), on Lua 5.1, LuaJIT and 5.4 (BENCH_CLIENTS of each, over TLS).
bench-fds:
	@for v in 5.1 luajit 5.4; do $(MAKE) -s LUA_VERSION=$$v build || exit 1; done
	@echo "| interpreter | dropped | fds: start -> after clients | fds: -> after one-shot calls | RSS |"
	@echo "| --- | --- | --- | --- | --- |"
	@for lua in lua5.1 luajit lua5.4; do $$lua bench/dropped_clients.lua || exit 1; done

# The suite with the C core built under AddressSanitizer and UBSan.
asan:
	@sh spec/run asan:$(LUA_VERSION)

# libFuzzer harnesses (clang; Debian's clang and libclang-rt-14-dev) for
# the C surfaces that take outside data, FUZZ_TIME seconds each, starting
# from the seed corpus in fuzz/corpus/; what they learn stays in build/.
FUZZ_CC    ?= clang
FUZZ_TIME  ?= 60
FUZZ_LUA   ?= 5.4
FUZZ_FLAGS  = -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -D_POSIX_C_SOURCE=200809L -I/usr/include/lua$(FUZZ_LUA) $(CURL_CFLAGS)
FUZZERS     = request response

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(SOURCES) $(HEADERS)
	@command -v $(FUZZ_CC) >/dev/null || { echo "make fuzz needs clang: apt-get install clang libclang-rt-14-dev"; exit 1; }
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(SOURCES) -llua$(FUZZ_LUA) \
	    $(CURL_LIBS) $(CRYPTO_LIBS)

fuzz: $(FUZZERS:%=build/fuzz/fuzz_%)
	@for name in $(FUZZERS); do \
	    mkdir -p build/fuzz/corpus-$$name; \
	    echo "== fuzz_$$name for $(FUZZ_TIME) s"; \
	    ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=spec/support/lsan.supp \
	    build/fuzz/fuzz_$$name -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        -artifact_prefix=build/fuzz/crash-$$name- \
	        build/fuzz/corpus-$$name fuzz/corpus/$$name > build/fuzz/$$name.log 2>&1; \
	    status=$$?; \
	    grep -E '^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY)' \
	        build/fuzz/$$name.log; \
	    [ $$status -eq 0 ] || { tail -n 40 build/fuzz/$$name.log; exit 1; }; \
	done

# The suite under valgrind; any definite leak or memory error fails it.
valgrind:
	@sh spec/run valgrind:$(LUA_VERSION)

clean:
	rm -rf build
