# los-testbed: `make experiment` runs the paper's experiments, `make test` checks everything.
# Both install what they need into .venv from requirements.lock (the pinned versions).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
NFQUEUE_HEADER := /usr/include/libnetfilter_queue/libnetfilter_queue.h
# the stamp names the inputs of the install, so a change to any of them reinstalls
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-local.lock pyproject.toml | cksum | cut -d' ' -f1)$(if $(wildcard $(NFQUEUE_HEADER)),-nfq,)
# torch is the CPU build (torch==2.13.0+cpu); machines of this project keep its wheel in
# /opt/wheels. Elsewhere: make PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
WHEELS := $(wildcard /opt/wheels)
PIP_EXTRA ?= $(if $(WHEELS),--find-links $(WHEELS),)
UV_VERSION := 0.13.9
PROFILE ?= quick
TESTBED ?= auto
# TESTBED=openstack: the clouds.yaml entry (CLOUD=NAME, else OS_CLOUD) and, optionally, the
# image (IMAGE=NAME, else experiments/openstack.yaml's)
CLOUD ?=
IMAGE ?=
OPENSTACK_FLAGS = $(if $(CLOUD),--cloud $(CLOUD),) $(if $(IMAGE),--image $(IMAGE),)
# KEEP=1: leave the servers up after `make experiment TESTBED=openstack`
KEEP ?=
# FRESH=1: start new runs instead of resuming unfinished ones (`--fresh`)
FRESH ?=
RUN_FLAGS = $(OPENSTACK_FLAGS) $(if $(KEEP),--keep,)

.PHONY: install system-packages test-packages experiment test lint bench calibrate lock clean openstack-box guest-image \
	bench-openstack bench-fidelity

# Debian packages the local testbed uses: namespaces and links (iproute2), the mesh
# routing daemon (babeld), NFQUEUE rules (iptables), ping for link checks, and sshd per
# node plus the ssh client for the playbooks (openssh).
SYSTEM_PACKAGES := iproute2 iptables babeld iputils-ping libnetfilter-queue-dev gcc \
	openssh-server openssh-client
SYSTEM_COMMANDS := ip iptables ip6tables babeld ping ssh ssh-keygen /usr/sbin/sshd

install: $(STAMP)

system-packages:
	@missing=0; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	[ -f $(NFQUEUE_HEADER) ] || missing=1; \
	if [ $$missing = 1 ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES); } \
	      || echo "note: could not install $(SYSTEM_PACKAGES): local-testbed tests will be skipped"; \
	  else echo "note: install $(SYSTEM_PACKAGES) for the local testbed (needs root)"; fi; \
	fi

# Debian packages only `make test` needs: a headless browser that renders report.html
# (tests/test_report_html.py). After system-packages: one apt-get at a time.
TEST_PACKAGES := chromium

test-packages: system-packages
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_PACKAGES); } \
	      || echo "note: could not install $(TEST_PACKAGES): the report.html browser test will be skipped"; \
	  else echo "note: install $(TEST_PACKAGES) for the report.html browser test (needs root)"; fi; \
	fi

$(STAMP): requirements.lock requirements-local.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "los-testbed needs Python 3.11, found " + sys.version.split()[0]'
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	@# uv installs the lock in seconds (pip: about a minute here); pip where uv cannot be
	@# installed or cannot install the lock (uv does not read pip's configuration)
	@uv="$(BIN)/uv pip install --quiet --python $(BIN)/python --index-strategy unsafe-best-match"; \
	pip="$(BIN)/pip install --quiet"; \
	local_lock() { if [ -f $(NFQUEUE_HEADER) ]; then $$1 -r requirements-local.lock; \
	  else echo "note: no libnetfilter-queue-dev: the local testbed runs without link delays"; fi; }; \
	lock() { echo "$$1 $(PIP_EXTRA) -r requirements.lock" && $$1 $(PIP_EXTRA) -r requirements.lock \
	  && local_lock "$$1" && $$1 --no-deps -e .; }; \
	if $$pip $(PIP_EXTRA) uv==$(UV_VERSION) && lock "$$uv"; then :; \
	else echo "note: installing with pip instead of uv (slower)"; lock "$$pip"; fi
	touch $@

# TESTBED=auto (the default) runs the local testbed where this machine can host it (root,
# namespaces, cgroups), installing its Debian packages first, and the twin otherwise;
# TESTBED=twin or TESTBED=local to choose. The Debian packages come before the Python
# ones (netfilterqueue builds against libnetfilter-queue-dev).
experiment: $(if $(filter twin openstack,$(TESTBED)),,system-packages) $(STAMP)
	$(BIN)/testbed experiment --profile $(PROFILE) --testbed $(TESTBED) $(if $(FRESH),--fresh,) \
		$(if $(filter openstack,$(TESTBED)),$(RUN_FLAGS),)

# The node image for real guests (QEMU here, or any OpenStack cloud): Debian 12 from
# Debian packages only, cached by the hash of its recipe (~/.cache/los-testbed/images,
# LOS_IMAGE_DIR); installs the build's and QEMU's Debian packages first (root).
GUEST_PACKAGES := mmdebstrap grub-pc-bin qemu-utils fdisk e2fsprogs qemu-system-x86 mtools dosfstools
guest-image: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(GUEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing; fi; fi
	$(BIN)/testbed guest-image

# A real OpenStack control plane on this machine (root, Debian 12; ~7 min, ~3 GB): the
# cloud `osbox` in ~/.config/openstack/clouds.yaml, for trying the OpenStack testbed
# without a cloud (servers reach ACTIVE, no guest boots). Rerun it to restart what died.
openstack-box: $(STAMP)
	@if [ -f /tmp/osbox/run/keystone.cmd ]; then $(BIN)/testbed openstack-box health; \
	else $(BIN)/testbed openstack-box all; fi

# Provision the paper layout on a cloud, time it against the slowest single create, and
# tear it down: make bench-openstack CLOUD=osbox IMAGE=osbox-placeholder
bench-openstack: $(STAMP)
	$(BIN)/testbed bench-openstack $(OPENSTACK_FLAGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# LOS_REQUIRE_OPENSTACK_BOX=1, LOS_REQUIRE_LOCAL_TESTBED=1, LOS_REQUIRE_CITYPULSE=1 and
# LOS_REQUIRE_BROWSER=1 in the environment (as .ci/run sets them) reach pytest unchanged: a
# missing prerequisite then fails its tests instead of skipping them (tests/conftest.py,
# tests/test_report_html.py).
test: system-packages test-packages lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/testbed bench
	$(BIN)/testbed bench-workload
	@if [ "$$(id -u)" = 0 ]; then $(BIN)/testbed bench-local; else echo "bench-local: needs root"; fi

# Experiment B on the twin against the paper's Figs. 6-7, the training work fitted to the
# paper's Fig. 5 only, and how much of the error each reading switch explains. Keeps the
# runs, bench-fidelity.md and the fitted calibration (fig5-fit/paper-fig5-fit.yaml) in
# results/bench-fidelity/.
bench-fidelity: $(STAMP)
	$(BIN)/testbed bench-fidelity --ablations --results results/bench-fidelity

# Measure training time against CPU limits here (root, cgroups; a few minutes) with a warm
# worker per node, as the agents run jobs, and write the calibration the specs use.
calibrate: $(STAMP)
	$(BIN)/testbed calibrate --mode warm --out experiments/calibration/calibrated.yaml

# Regenerate the lock file after changing dependencies in pyproject.toml.
lock:
	$(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu $(PIP_EXTRA) --no-emit-find-links \
		-o requirements.lock
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --extra local --python-version 3.11 \
		--python-platform x86_64-unknown-linux-gnu $(PIP_EXTRA) --no-emit-find-links \
		--no-header -c requirements.lock | grep -E '^netfilterqueue==' > requirements-local.lock

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .tox .import_linter_cache
