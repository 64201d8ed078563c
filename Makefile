# Tiers: unit (seconds, no privileges) -> etcd (real etcd on loopback) -> netns (root, network
# namespaces: the agent against real kernel state) -> interop (the same, mixed with the real
# flanneld) -> molecule (systemd Docker nodes running site.yml) -> vagrant (2 Debian VMs with their
# own kernel: site.yml with kernel ipip, a reboot). `make test` runs them all, fastest first.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
BACKEND ?= vxlan

.PHONY: help install deps dist lint test test-unit test-etcd test-netns test-interop test-ansible test-molecule \
        test-vagrant lab lab-down netns-lab netns-lab-down bench bench-short clean

help:
	@echo "make lab [BACKEND=vxlan|udp|host-gw|ipip]  local 3-node cluster + site.yml + ping matrix"
	@echo "make lab-down                               remove the lab"
	@echo "make dist                                   dist/: the agent's wheelhouse and the collection tarball"
	@echo "make test                                   every test tier (unit, etcd, netns, interop, ansible, molecule, vagrant)"
	@echo "make test-unit | test-etcd | test-netns | test-interop | test-ansible | test-molecule | test-vagrant"
	@echo "make lint                                   ruff, mypy, ansible-lint"
	@echo "make bench                                  benchmarks -> docs/benchmarks.md (~25 min)"
	@echo "make bench-short                            the CI variant (under 2 min)"

install:
	$(PYTHON) -m pip install -q -e '.[test,provision,bench]'

# What operators deploy: dist/wheelhouse (the agent and its dependencies, for the flannel role's
# flannel_wheelhouse_dir) and dist/pyflannel-overlay-<version>.tar.gz (the collection).
dist:
	bash scripts/build-dist.sh

# Installs what is missing (apt and pip); quick when everything is there.
deps:
	@bash scripts/ensure-test-deps.sh

lint: deps
	ruff check pyflannel pyflannel_lab tests bench plugins scripts molecule roles
	ruff format --check pyflannel pyflannel_lab tests bench plugins scripts molecule roles
	mypy pyflannel pyflannel_lab
	ansible-lint

test: deps test-unit test-etcd test-netns test-interop test-ansible test-molecule test-vagrant

test-unit: deps
	$(PYTEST) tests/unit -q

test-etcd: deps
	$(PYTEST) tests/etcd -q

test-netns: deps
	$(PYTEST) tests/netns -q

# Mixed clusters with the real flanneld v0.20.2 (pyflannel_lab/peers.py: ../shared/peers next to
# the checkout, or PYFLANNEL_PEERS_DIR / PYFLANNEL_FLANNELD / PYFLANNEL_MK_DOCKER_OPTS). Without
# it the target fails with one line saying how to get it; PYFLANNEL_INTEROP=skip prints that
# line and goes on, for machines that cannot have it.
test-interop: deps
	@$(PYTHON) -m pyflannel_lab.peers; status=$$?; \
	if [ $$status -eq 3 ]; then exit 0; elif [ $$status -ne 0 ]; then exit $$status; fi; \
	$(PYTEST) tests/interop -q

test-ansible: deps
	$(PYTEST) tests/ansible -q

test-molecule:
	scripts/molecule-all.sh

# VMs (Vagrant + libvirt, software emulation): installs libvirt, builds the box, runs
# molecule/vagrant-ipip; VMs and networks are removed afterwards, also on failure.
test-vagrant:
	scripts/molecule-vagrant.sh

lab:
	scripts/lab.sh up $(BACKEND)

lab-down:
	scripts/lab.sh down

# The agent alone on network-namespace hosts (no Docker, no Ansible): quick to bring up by hand.
netns-lab:
	$(PYTHON) -m pyflannel_lab up --hosts 3 --backend $(BACKEND)

netns-lab-down:
	$(PYTHON) -m pyflannel_lab down

# JSON per run in build/bench; the full run rewrites docs/benchmarks.md and its chart.
bench: deps
	$(PYTHON) bench/leasing.py
	$(PYTHON) bench/controlplane.py --json build/bench/controlplane.json
	$(PYTHON) bench/dataplane.py --json build/bench/dataplane.json
	$(PYTHON) bench/provision.py --json build/bench/provision.json
	$(PYTHON) bench/report.py --dataplane build/bench/dataplane.json \
		--controlplane build/bench/controlplane.json --provision build/bench/provision.json \
		--out docs

# Under two minutes (CI): 1000 leases, the main data paths, one round; the report stays in
# build/bench.
bench-short: deps
	$(PYTHON) bench/controlplane.py --short --json build/bench/controlplane-short.json
	$(PYTHON) bench/dataplane.py --short --json build/bench/dataplane-short.json
	$(PYTHON) bench/report.py --dataplane build/bench/dataplane-short.json \
		--controlplane build/bench/controlplane-short.json --out build/bench \
		--command "make bench-short"

clean:
	rm -rf build/lib dist *.egg-info .mypy_cache .ruff_cache
