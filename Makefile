# Tiers: unit (seconds, no privileges) -> etcd (real etcd on loopback) -> netns (root, network
# namespaces: the agent against real kernel state) -> molecule (systemd Docker nodes running
# site.yml). `make test` runs them all, fastest first.
PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
BACKEND ?= vxlan

.PHONY: help install lint test test-unit test-etcd test-netns test-ansible test-molecule \
        lab lab-down netns-lab netns-lab-down bench clean

help:
	@echo "make lab [BACKEND=vxlan|udp|host-gw|ipip]  local 3-node cluster + site.yml + ping matrix"
	@echo "make lab-down                               remove the lab"
	@echo "make test                                   every test tier (unit, etcd, netns, ansible, molecule)"
	@echo "make test-unit | test-etcd | test-netns | test-ansible | test-molecule"
	@echo "make lint                                   ruff, mypy, ansible-lint"
	@echo "make bench                                  leasing and data-plane benchmarks"

install:
	$(PYTHON) -m pip install -q -e '.[test]'

lint:
	ruff check pyflannel pyflannel_lab tests bench library module_utils filter_plugins scripts
	ruff format --check pyflannel pyflannel_lab tests bench library module_utils filter_plugins scripts
	mypy pyflannel pyflannel_lab
	@if [ -d roles ] && ls roles/*/tasks >/dev/null 2>&1; then ansible-lint; fi

test: test-unit test-etcd test-netns test-ansible test-molecule

test-unit:
	$(PYTEST) tests/unit -q

test-etcd:
	$(PYTEST) tests/etcd -q

test-netns:
	$(PYTEST) tests/netns -q

test-ansible:
	@if [ -d tests/ansible ]; then $(PYTEST) tests/ansible -q; else echo "no ansible tests yet"; fi

test-molecule:
	@if [ -x scripts/molecule-all.sh ]; then scripts/molecule-all.sh; else echo "no molecule scenarios yet"; fi

lab:
	@if [ -x scripts/lab.sh ]; then scripts/lab.sh up $(BACKEND); else $(MAKE) netns-lab; fi

lab-down:
	@if [ -x scripts/lab.sh ]; then scripts/lab.sh down; else $(MAKE) netns-lab-down; fi

# The agent alone on network-namespace hosts (no Docker, no Ansible): quick to bring up by hand.
netns-lab:
	$(PYTHON) -m pyflannel_lab up --hosts 3 --backend $(BACKEND)

netns-lab-down:
	$(PYTHON) -m pyflannel_lab down

bench:
	$(PYTHON) bench/leasing.py
	$(PYTHON) bench/dataplane.py

clean:
	rm -rf build/lib build/wheelhouse dist *.egg-info .mypy_cache .ruff_cache
