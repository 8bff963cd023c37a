# hand2world — the two quick-start commands are `make run` and `make test`.
.PHONY: setup run demo test lint bench

HOST ?= 127.0.0.1
PORT ?= 8000

setup:
	@bash scripts/setup.sh

# The main job: the live app with the shipped model (weights/default, the tiny causal student).
# Open http://$(HOST):$(PORT)/ in Chromium/Chrome, press Start and gesture at the webcam.
run: setup
	.venv/bin/hand2world serve --host $(HOST) --port $(PORT)

# The conditioning path on the real cup video -> outputs/cup_control.mp4 (input | landmarks |
# control render | Plücker rays) with per-stage timings in outputs/cup_control.json.
demo: setup
	.venv/bin/hand2world control --out outputs/cup_control.mp4

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check hand2world server distill tests

bench: setup
	.venv/bin/hand2world bench render
	.venv/bin/hand2world bench fit
	.venv/bin/hand2world bench control
