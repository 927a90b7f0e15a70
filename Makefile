# rate_limiter: PGXS build of a C++17 PostgreSQL extension.
#
#   make && make install          build and install (as root)
#   make unit-test                the pure core's GoogleTest suite, no server
#   make installcheck             pg_regress, isolation and TAP suites, each on
#                                 its own throwaway server with the library
#                                 preloaded (run as a non-root user)
#   make ASAN=1                   sanitizer build (see the asan suite)
#   bash scripts/test.sh          everything, including pgTAP and the stress test
#   make dist                     the PGXN archive rate_limiter-<version>.zip

EXTENSION   = rate_limiter
MODULE_big  = rate_limiter
# The install script of the current version is built from the topic files
# of sql/schema (their numbers give the order; scripts/gen_schema.py); the
# scripts of older versions and the update scripts are committed as they are.
EXTVERSION  = $(shell sed -n "s/^default_version *= *'\\(.*\\)'/\\1/p" $(EXTENSION).control)
SCHEMA_SRCS = $(sort $(wildcard sql/schema/[0-9]*.sql))
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA        = $(filter-out $(DATA_built),$(wildcard sql/$(EXTENSION)--*.sql))

CORE_SRCS   = $(sort $(wildcard src/core/*.cpp))
PG_SRCS     = $(sort $(wildcard src/pg/*.cpp src/pg/*/*.cpp))
OBJS        = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

# pg_regress inputs are sql/<topic>.sql with expected/<topic>.out: every
# sql/*.sql but the extension's scripts.  Each file starts with
# \i test/sql_helpers/fresh_start.sql (a fresh installation), so any one
# runs alone and in any order: make installcheck REGRESS=settle.
REGRESS     = $(sort $(filter-out $(EXTENSION)--%,$(basename $(notdir $(wildcard sql/*.sql)))))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=test/regress.conf --load-extension=rate_limiter

ISOLATION   = $(basename $(notdir $(sort $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --temp-instance=./tmp_check_iso --temp-config=test/regress.conf --load-extension=rate_limiter

TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = test/unit/run_unit_tests results output_iso tmp_check tmp_check_iso regression.diffs regression.out

# Server headers are system headers for us: their old-style code must not
# trip our -Werror.
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -Iinclude \
              -DRATE_LIMITER_SCHEMA_VERSION='"$(EXTVERSION)"'
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Werror
SHLIB_LINK  = -lstdc++

# make ASAN=1: AddressSanitizer and UndefinedBehaviorSanitizer build (the
# "asan" suite of scripts/test.sh).  The server is not instrumented and the
# runtimes load with our library (ASAN_OPTIONS=verify_asan_link_order=0; see
# run_asan in scripts/test.sh for why not LD_PRELOAD), so ASan's longjmp
# interceptor is off: stack instrumentation is dropped, since a longjmp out
# of ereport would leave stale stack poison.  UBSan reports and continues.
ifdef ASAN
PG_CXXFLAGS += -fsanitize=address,undefined -fno-sanitize-address-use-after-scope --param asan-stack=0 -fno-omit-frame-pointer -g -O1
SHLIB_LINK  += -fsanitize=address,undefined
endif

# JIT bitcode is deliberately off: PGXS would compile our C++17 sources with
# clang -std=c++14 for LLVM inlining, and JIT could not inline these
# functions into expressions anyway (they are called through fmgr and touch
# shared memory).  See docs/architecture.md, "Build notes".
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The per-limit options (sql/schema/options.tsv) are expanded into the
# columns and argument lists of the schema files on the way.
$(DATA_built): $(SCHEMA_SRCS) sql/schema/options.tsv scripts/gen_schema.py scripts/rl_options.py $(EXTENSION).control
	python3 scripts/gen_schema.py sql/schema/options.tsv $(SCHEMA_SRCS) > $@.tmp && mv $@.tmp $@

# Objects depend on our headers (PGXS only knows about sources).
$(OBJS): $(wildcard include/rate_limiter/*/*.hpp include/rate_limiter/pg/*/*.hpp)
# The library is built for the schema version of the control file
# (RATE_LIMITER_SCHEMA_VERSION): a new default_version rebuilds what reads it.
src/pg/shmem/extension_catalog.o: $(EXTENSION).control

UNIT_SRCS = $(sort $(wildcard test/unit/*.cpp))
test/unit/run_unit_tests: $(UNIT_SRCS) $(wildcard test/unit/*.hpp) $(CORE_SRCS) $(wildcard include/rate_limiter/core/*.hpp)
	$(CXX) -std=c++17 -O1 -g -Wall -Wextra -Werror -Iinclude -o $@ $(UNIT_SRCS) $(CORE_SRCS) \
	  -lgtest -lgtest_main -pthread

.PHONY: unit-test
unit-test: test/unit/run_unit_tests
	./test/unit/run_unit_tests

# libFuzzer targets over the pure core (test/fuzz/, docs/testing.md, "Fuzzing and
# static analysis").  make fuzz-run runs each from its seed corpus for an
# equal share of FUZZ_SECONDS; new inputs go to a scratch corpus, crashes to
# test/fuzz/out/.
FUZZ_CXX     ?= clang++
FUZZ_SECONDS ?= 60
FUZZ_SEED    ?= 1
FUZZ_FLAGS    = -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                -Iinclude -Itest/fuzz
FUZZ_TARGETS  = $(basename $(notdir $(sort $(wildcard test/fuzz/fuzz_*.cpp))))
FUZZ_BINS     = $(addprefix test/fuzz/out/,$(FUZZ_TARGETS))
EXTRA_CLEAN  += test/fuzz/out

test/fuzz/out/%: test/fuzz/%.cpp test/fuzz/fuzz_common.hpp $(CORE_SRCS) $(wildcard include/rate_limiter/core/*.hpp)
	@mkdir -p test/fuzz/out
	$(FUZZ_CXX) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRCS)

.PHONY: fuzz fuzz-run
fuzz: $(FUZZ_BINS)

fuzz-run: fuzz
	@share=$$(( $(FUZZ_SECONDS) / $(words $(FUZZ_TARGETS)) )); [ $$share -ge 1 ] || share=1; \
	status=0; \
	for t in $(FUZZ_TARGETS); do \
	  scratch=test/fuzz/out/corpus-$$t; mkdir -p $$scratch; \
	  echo "fuzz: $$t for $$share s, -seed=$(FUZZ_SEED)"; \
	  ./test/fuzz/out/$$t -seed=$(FUZZ_SEED) -max_total_time=$$share -max_len=4096 \
	    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=test/fuzz/out/$$t- $$scratch test/fuzz/corpus/$$t \
	    && echo "FUZZ PASS: $$t" || { echo "FUZZ FAIL: $$t"; status=1; }; \
	done; exit $$status

# Static analysis of our sources (not the server's): clang-tidy with
# .clang-tidy, cppcheck.  Server headers are -isystem, as in the build.
LINT_SRCS = $(CORE_SRCS) $(PG_SRCS)
LINT_JOBS ?= 2
.PHONY: lint lint-tidy lint-cppcheck lint-meta lint-layers lint-options lint-format format
lint: lint-tidy lint-cppcheck lint-meta lint-layers lint-options lint-format

# Every C++ file of ours as .clang-format says (clang-format 14, Debian 12);
# make format rewrites them.
FORMAT_FILES = $(shell git ls-files '*.cpp' '*.hpp' 2>/dev/null || find src include test -name '*.[ch]pp')
lint-format:
	@clang-format --dry-run -Werror $(FORMAT_FILES) && echo "clang-format: clean ($(words $(FORMAT_FILES)) files)"

format:
	clang-format -i $(FORMAT_FILES)

# The per-limit options are named alike in sql/schema/options.tsv, the C++
# list, the upsert, the update scripts, the settings and the documentation
# (scripts/check_options.py).
lint-options:
	@python3 scripts/check_options.py

# Includes point down the subsystem layers of src/pg (scripts/check_layers.py).
lint-layers:
	@python3 scripts/check_layers.py

lint-tidy:
	@echo "clang-tidy: $(words $(LINT_SRCS)) files, $(LINT_JOBS) jobs"
	@printf '%s\n' $(LINT_SRCS) | xargs -P$(LINT_JOBS) -I{} clang-tidy --quiet {} -- \
	  -std=c++17 -Iinclude -DRATE_LIMITER_SCHEMA_VERSION='"$(EXTVERSION)"' \
	  -isystem $(shell $(PG_CONFIG) --includedir-server) 2>/dev/null \
	  && echo "clang-tidy: clean"

# PostgreSQL headers are not given to cppcheck (it would analyse the server
# and report thousands of findings there); missingIncludeSystem is therefore
# suppressed.  ereport(ERROR) is an unknown macro to it: code after one must
# be correct on its own.
lint-cppcheck:
	cppcheck -q -j$(LINT_JOBS) --std=c++17 --enable=warning,performance,portability \
	  --error-exitcode=1 --inline-suppr --suppress=missingIncludeSystem -Iinclude \
	  -DRATE_LIMITER_SCHEMA_VERSION='"$(EXTVERSION)"' src/core src/pg \
	  && echo "cppcheck: clean"

# PGXN packaging.  META.json's version is rate_limiter.control's
# default_version as a semantic version (1.4 -> 1.4.0); meta-check fails
# when they disagree.  make dist archives the committed tree (HEAD, as
# git archive does) as rate_limiter-<version>.zip with everything under
# rate_limiter-<version>/, the layout PGXN expects.  lint-meta checks both.
DISTVERSION = $(shell python3 scripts/check_meta.py --print-version)
DISTNAME    = $(EXTENSION)-$(DISTVERSION)
EXTRA_CLEAN += $(EXTENSION)-*.zip

.PHONY: meta-check dist
meta-check:
	@python3 scripts/check_meta.py

dist: meta-check
	git archive --format=zip --prefix=$(DISTNAME)/ -o $(DISTNAME).zip HEAD
	@echo "dist: $(DISTNAME).zip"

lint-meta:
	@tmp=$$(mktemp -d) && \
	  git archive --format=zip --prefix=$(DISTNAME)/ -o $$tmp/$(DISTNAME).zip HEAD && \
	  python3 scripts/check_meta.py --zip $$tmp/$(DISTNAME).zip; \
	  status=$$?; rm -rf $$tmp; exit $$status
