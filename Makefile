# hand2world — the two quick-start commands are `make run` and `make test`.
.PHONY: setup run test lint bench

setup:
	@bash scripts/setup.sh

# The main job. Until the live server lands this runs the furthest real pipeline: the real cup
# video -> MediaPipe -> hand fit -> control render + Plücker rays, as a side-by-side MP4.
run: setup
	.venv/bin/hand2world control --out outputs/cup_control.mp4

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check hand2world server distill tests

bench: setup
	.venv/bin/hand2world bench render
