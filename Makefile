# rate_limiter: PGXS build of a C++17 PostgreSQL extension.
#
#   make && make install          build and install (as root)
#   make unit-test                the pure core's GoogleTest suite, no server
#   make installcheck             pg_regress, isolation and TAP suites, each on
#                                 its own throwaway server with the library
#                                 preloaded (run as a non-root user)
#   make ASAN=1                   sanitizer build (see the asan suite)
#   bash scripts/test.sh          everything, including pgTAP and the stress test

EXTENSION   = rate_limiter
MODULE_big  = rate_limiter
DATA        = $(wildcard sql/rate_limiter--*.sql)

CORE_SRCS   = $(sort $(wildcard src/core/*.cpp))
PG_SRCS     = $(sort $(wildcard src/pg/*.cpp))
OBJS        = $(CORE_SRCS:.cpp=.o) $(PG_SRCS:.cpp=.o)

# pg_regress inputs are sql/NNN_topic.sql with expected/NNN_topic.out.
REGRESS     = $(basename $(notdir $(sort $(wildcard sql/[0-9]*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=test/regress.conf --load-extension=rate_limiter

ISOLATION   = $(basename $(notdir $(sort $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --temp-instance=./tmp_check_iso --temp-config=test/regress.conf --load-extension=rate_limiter

TAP_TESTS   = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = test/unit/run_unit_tests results output_iso tmp_check tmp_check_iso regression.diffs regression.out

# Server headers are system headers for us: their old-style code must not
# trip our -Werror.
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -Iinclude
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
# shared memory).  See README, "Building".
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Objects depend on our headers (PGXS only knows about sources).
$(OBJS): $(wildcard include/rate_limiter/*/*.hpp)

UNIT_SRCS = $(sort $(wildcard test/unit/*.cpp))
test/unit/run_unit_tests: $(UNIT_SRCS) $(CORE_SRCS) $(wildcard include/rate_limiter/core/*.hpp)
	$(CXX) -std=c++17 -O1 -g -Wall -Wextra -Werror -Iinclude -o $@ $(UNIT_SRCS) $(CORE_SRCS) \
	  -lgtest -lgtest_main -pthread

.PHONY: unit-test
unit-test: test/unit/run_unit_tests
	./test/unit/run_unit_tests
