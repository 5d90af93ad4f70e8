# The two quick-start commands: `make run` and `make test`. Both install what is missing.
# Debian's CPython, not whichever python3 is first on PATH: built with profile-guided and
# link-time optimisation and without a shared libpython, it ran a pure-Python loop in 1.32-1.40 s
# against 1.82-2.20 s for pyenv's plain source build of 3.11.7, and a FUSE create in 162-182 us
# against 186-211 us. `make PY=...` picks another; an existing .venv is kept (rm -rf .venv).
PY      ?= /usr/bin/python3
VENV    := .venv
BIN     := $(VENV)/bin
# The suite in three processes, each taking whole test files (a file's fixtures stay in one
# process). Most tests wait on servers and subprocesses rather than compute, so three workers
# beat two even on two cores: 16 min serially, under 9 in parallel. `make test TEST_JOBS=`
# runs it serially.
TEST_JOBS ?= -n 3 --dist loadfile
STAMP   := $(VENV)/.installed
DEB_PKGS := python3 python3-venv python3-dev softhsm2 openssl fuse3 gocryptfs git sqlite3 qemu-utils libnbd-bin nbdkit cryptsetup-bin e2fsprogs mount s3cmd rclone s3fs \
            gcc libc6-dev libssl-dev chromium fonts-noto-cjk postgresql haproxy wrk
DATA_DIR ?= ./var
# The block adapter's sector loop (AES-XTS-plain64 through OpenSSL), loaded with ctypes.
XTS_SO  := adapters/block/libssegw_xts.so
# The NBD server's loop for small aligned reads and writes (calls the XTS loop above).
NBD_SO  := adapters/block/libssegw_nbd.so
# The file adapter's block-record loop (AES-256-GCM through OpenSSL), loaded with ctypes.
GCM_SO  := adapters/file/libssegw_gcm.so
# The KMS's AES-GCM call inside the HSM (C_EncryptInit + C_Encrypt in one call), loaded with ctypes.
P11_SO  := kms_core/keystore/libssegw_p11.so

.PHONY: run test deps debs lint clean

debs:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | debs
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# debs is order-only: it brings the compiler and headers, but must not force a rebuild.
$(XTS_SO): adapters/block/xts_sectors.c | debs
	$(CC) -O2 -Wall -Wextra -fPIC -shared -o $@.tmp $< -lcrypto
	mv $@.tmp $@

$(NBD_SO): adapters/block/nbd_fastpath.c | debs
	$(CC) -O2 -Wall -Wextra -fPIC -shared -pthread -o $@.tmp $<
	mv $@.tmp $@

$(GCM_SO): adapters/file/gcm_blocks.c | debs
	$(CC) -O2 -Wall -Wextra -fPIC -shared -o $@.tmp $< -lcrypto
	mv $@.tmp $@

$(P11_SO): kms_core/keystore/p11_gcm.c | debs
	$(CC) -O2 -Wall -Wextra -fPIC -shared -o $@.tmp $< -ldl
	mv $@.tmp $@

deps: debs $(STAMP) $(XTS_SO) $(NBD_SO) $(GCM_SO) $(P11_SO)

run: deps
	$(BIN)/ssegw serve --data-dir $(DATA_DIR)

# SSEGW_NATIVE_XTS/GCM/P11=required: a missing or broken native sector loop (or NBD loop, the
# file adapter's block loop, the HSM's AES-GCM call) fails the tests instead of falling back to
# the slow path unnoticed.
test: deps
	SSEGW_NATIVE_XTS=required SSEGW_NATIVE_GCM=required SSEGW_NATIVE_P11=required $(BIN)/python -m pytest -q $(TEST_JOBS)

lint: deps
	$(BIN)/ruff check kms_core gateway adapters tests bench examples fuzz
	$(BIN)/mypy kms_core gateway adapters tests fuzz bench examples

clean:
	rm -rf $(VENV) var .pytest_cache $(XTS_SO) $(NBD_SO) $(GCM_SO) $(P11_SO)
