# The two set-up commands of the README. Both install what they need first (idempotent).
#   make main   train -> export -> quantize -> bench on the built-in default, offline
#   make test   the test suite (what CI runs through .ci/run)
.PHONY: main test install lint

install:
	bash scripts/install.sh

main: install
	bash scripts/main.sh

test: install
	bash scripts/test.sh

lint: install
	.venv/bin/ruff check .
