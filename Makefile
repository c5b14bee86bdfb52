# The two commands of the README. Both install what is missing first (Debian packages and .venv).
.PHONY: demo test install

.venv/.installed: install.sh pyproject.toml constraints.txt
	./install.sh

install: .venv/.installed

demo: .venv/.installed   ## transcribe the bundled street recording with the shipped default model
	.venv/bin/drsn-asr transcribe drsn_asr/assets/street_demo.flac

test: .venv/.installed   ## the whole test suite
	.venv/bin/python -m pytest -q
