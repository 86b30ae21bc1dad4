# Two commands on a fresh machine; each installs what it needs first (scripts/install.sh,
# idempotent), at the versions constraints.txt pins.
#   make demo   the main job: an 8-trial search on the embedded demo data
#   make test   system services + test extras, then the README's test command
.PHONY: demo test install install-test lock

demo: install
	.venv/bin/torchcell-search start --study demo

test: install-test
	. .venv/bin/activate && python -m pytest -q

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh --test

# Regenerate constraints.txt after changing a dependency in pyproject.toml.
lock:
	bash scripts/lock.sh
