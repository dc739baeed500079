# zfs-serve build, package and test entry points.
#
#   make            bin/zfs-serve, bin/zctl, bin/zfetch for this machine
#   make deb        dist/zfs-serve_VERSION_ARCH.deb (GOARCH=arm64 make deb cross-builds)
#   make units      systemd-analyze verify and the security score of packaging/
#   make lintian    lintian on the .deb
#   make test       scripts/test, everything CI runs
#   make clean
#
# Binaries are static (CGO_ENABLED=0: no libc needed; the package carries a
# lintian override saying so), built with -trimpath, stripped, and stamped
# with VERSION (packaging/version: the git tag, else
# 0~gitDATE.HASH; override with make VERSION=...).

GO ?= go
GOARCH ?= $(shell $(GO) env GOARCH)
HOSTARCH := $(shell $(GO) env GOHOSTARCH)
# Evaluated once (a commit during the build must not change it halfway).
ifeq ($(origin VERSION),undefined)
VERSION := $(shell packaging/version)
endif
# The Debian name of Go's architecture.
DEB_ARCH := $(or $(filter-out 386 arm ppc64le,$(GOARCH)),$(if $(filter 386,$(GOARCH)),i386),$(if $(filter arm,$(GOARCH)),armhf),$(if $(filter ppc64le,$(GOARCH)),ppc64el))
# File times in the package and the changelog date: the commit's, so the
# same commit builds the same .deb.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
endif
MAINTAINER ?= zfs-serve maintainers <zfs-serve@packages.debian.invalid>

CMDS := zfs-serve zctl zfetch
LDFLAGS := -s -w -X github.com/zfs-serve/zfs-serve/version.Version=$(VERSION)
BUILD = CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '$(LDFLAGS)'
# Where the package and its binaries go (the e2e test builds into a
# temporary directory).
DIST ?= dist
BUILDDIR := $(DIST)/build/$(GOARCH)
HOSTDIR := $(DIST)/build/$(HOSTARCH)
DEB := $(DIST)/zfs-serve_$(VERSION)_$(DEB_ARCH).deb
# systemd-analyze security --offline=true must say this or less ("OK").
MAX_EXPOSURE := 1.5

.PHONY: all build deb units lintian test clean version FORCE

all: build

version:
	@echo $(VERSION)

build: $(addprefix bin/,$(CMDS))

bin/%: FORCE
	$(BUILD) -o $@ ./cmd/$*

$(BUILDDIR)/%: FORCE
	GOARCH=$(GOARCH) $(BUILD) -o $@ ./cmd/$*

ifneq ($(GOARCH),$(HOSTARCH))
# A cross build asks host binaries for the --help text of the man pages.
$(HOSTDIR)/%: FORCE
	GOARCH=$(HOSTARCH) $(BUILD) -o $@ ./cmd/$*
endif

deb: $(addprefix $(BUILDDIR)/,$(CMDS)) $(addprefix $(HOSTDIR)/,$(CMDS))
	rm -f $(DIST)/zfs-serve_*_$(DEB_ARCH).deb
	packaging/mkdeb --bindir $(BUILDDIR) --helpbin $(HOSTDIR) --version '$(VERSION)' --arch $(DEB_ARCH) \
		--maintainer '$(MAINTAINER)' --epoch $(SOURCE_DATE_EPOCH) --out $(DEB)

# Checks of the units without a running systemd (verify, security score).
units:
	packaging/check-units $(MAX_EXPOSURE)

lintian: deb
	lintian --info $(DEB)

test:
	scripts/test

clean:
	rm -rf bin $(DIST)
