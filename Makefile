# promd: build, install, packages.
#
#   make                                   cargo build --release (promd, promctl)
#   make install [DESTDIR=] [PREFIX=/usr]  install the built binaries and every file below
#   make deb                               target/dist/promd_VERSION_ARCH.deb (debian/)
#   make rpm                               target/dist/promd-VERSION-1.ARCH.rpm (rpm/promd.spec)
#   make lintian                           lintian on the .deb
#   make clean                             cargo clean, and the packaging leftovers
#
# For developers, no root needed (`make check CARGO="nice -n 19 cargo"` to stay in the background):
#   make check                             fmt, clippy, unit tests, the tests that need no root,
#                                          the man pages, and the model check (if there is one)
#   make generate                          rewrite promctl's completions and promctl(1) in
#                                          packaging/ from src/bin/promctl (commit the result)
#
# `make install` is the one description of the installed layout: debian/rules and
# rpm/promd.spec both call it (DESTDIR=their staging root) and package what it installs.
# It does not build: run `make` first (the packages do).

VERSION := $(shell sed -n 's/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)

PREFIX ?= /usr
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/promd
SYSCONFDIR ?= /etc
# Where systemd, D-Bus and journald look, whatever PREFIX is.
UNITDIR ?= /usr/lib/systemd/system
CATALOGDIR ?= /usr/lib/systemd/catalog
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
DBUS_POLICYDIR ?= /usr/share/dbus-1/system.d
DBUS_INTERFACESDIR ?= /usr/share/dbus-1/interfaces
# Shell completions: Debian's directories (Fedora's zsh uses /usr/share/zsh/site-functions).
BASH_COMPLETIONDIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETIONDIR ?= $(DATADIR)/zsh/vendor-completions
FISH_COMPLETIONDIR ?= $(DATADIR)/fish/vendor_completions.d

CARGO ?= cargo
CARGO_FLAGS ?= --locked
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE_DIR := $(TARGET_DIR)/release
# Packages land here (never in the parent folder, where dpkg-buildpackage would put them).
DIST ?= $(CURDIR)/target/dist
RPM_TOPDIR := $(CURDIR)/target/rpmbuild

INSTALL ?= install
INSTALL_PROGRAM ?= $(INSTALL) -m 0755
INSTALL_DATA ?= $(INSTALL) -m 0644

MANPAGES := packaging/man/promd.8 packaging/man/promctl.1 packaging/man/promd.toml.5
# Every file of packaging/examples is installed: a list by hand forgot haproxy.cfg.
EXAMPLES := $(sort $(wildcard packaging/examples/*))
DBUS_INTERFACES := $(wildcard dbus/org.promd1.*.xml)

# Integration tests that need no root: every tests/*.rs but the system tests (nspawn hosts,
# as root: scripts/test.sh runs them), the model check (its own step, in release), and
# etcd_store and etcd_secure where there is no etcd binary to start their clusters with
# (store_contract then runs its dir half only; etcd_secure also needs etcdctl, which the
# etcd-client package installs with etcd).
ALL_TESTS := $(basename $(notdir $(wildcard tests/*.rs)))
ROOT_TESTS := $(filter system_% host_smoke,$(ALL_TESTS))
HAVE_ETCD := $(shell command -v etcd >/dev/null 2>&1 && echo yes)
ROOTLESS_TESTS := $(filter-out $(ROOT_TESTS) model_check $(if $(HAVE_ETCD),,etcd_store etcd_secure store_contract),$(ALL_TESTS))

.PHONY: all build install uninstall deb rpm lintian check check-man generate clean version

all: build

build:
	$(CARGO) build --release --bins $(CARGO_FLAGS)

version:
	@echo $(VERSION)

install:
	@for b in promd promctl; do \
	    if [ ! -x "$(RELEASE_DIR)/$$b" ]; then \
	        echo "make install: $(RELEASE_DIR)/$$b is missing: run 'make' first" >&2; exit 1; \
	    fi; \
	done
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(INSTALL_PROGRAM) $(RELEASE_DIR)/promd $(RELEASE_DIR)/promctl $(DESTDIR)$(BINDIR)/
	$(INSTALL) -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/bin/promd|$(BINDIR)/promd|g' -e 's|/etc/promd/promd.toml|$(SYSCONFDIR)/promd/promd.toml|g' \
	    units/promd.service > $(DESTDIR)$(UNITDIR)/promd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/promd.service
	$(INSTALL) -d $(DESTDIR)$(DBUS_POLICYDIR) $(DESTDIR)$(DBUS_INTERFACESDIR)
	$(INSTALL_DATA) dbus/org.promd1.conf $(DESTDIR)$(DBUS_POLICYDIR)/org.promd1.conf
	$(INSTALL_DATA) $(DBUS_INTERFACES) $(DESTDIR)$(DBUS_INTERFACESDIR)/
	$(INSTALL) -d $(DESTDIR)$(CATALOGDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR)
	$(INSTALL_DATA) packaging/promd.catalog $(DESTDIR)$(CATALOGDIR)/promd.catalog
	$(INSTALL_DATA) packaging/promd.sysusers $(DESTDIR)$(SYSUSERSDIR)/promd.conf
	$(INSTALL_DATA) packaging/promd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/promd.conf
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/promd
	@# Never overwrite an operator's configuration on a live system (packages stage into
	@# DESTDIR and mark it as a conffile / %config(noreplace)).
	@if [ -z "$(DESTDIR)" ] && [ -e $(SYSCONFDIR)/promd/promd.toml ]; then \
	    echo "make install: keeping $(SYSCONFDIR)/promd/promd.toml (the shipped default is packaging/promd.toml)"; \
	else \
	    echo "$(INSTALL_DATA) packaging/promd.toml $(DESTDIR)$(SYSCONFDIR)/promd/promd.toml"; \
	    $(INSTALL_DATA) packaging/promd.toml $(DESTDIR)$(SYSCONFDIR)/promd/promd.toml; \
	fi
	$(INSTALL) -d $(DESTDIR)$(DOCDIR)/examples
	$(INSTALL_DATA) $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	@set -e; for page in $(MANPAGES); do \
	    section=$${page##*.}; dest=$(DESTDIR)$(MANDIR)/man$$section/$$(basename $$page).gz; \
	    echo "gzip -9n < $$page > $$dest"; \
	    gzip -9n < $$page > $$dest; chmod 0644 $$dest; \
	done
	$(INSTALL) -d $(DESTDIR)$(BASH_COMPLETIONDIR) $(DESTDIR)$(ZSH_COMPLETIONDIR) $(DESTDIR)$(FISH_COMPLETIONDIR)
	$(INSTALL_DATA) packaging/completions/promctl.bash $(DESTDIR)$(BASH_COMPLETIONDIR)/promctl
	$(INSTALL_DATA) packaging/completions/_promctl $(DESTDIR)$(ZSH_COMPLETIONDIR)/_promctl
	$(INSTALL_DATA) packaging/completions/promctl.fish $(DESTDIR)$(FISH_COMPLETIONDIR)/promctl.fish

# The files `install` puts in place, except the configuration (left for the operator).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/promd $(DESTDIR)$(BINDIR)/promctl \
	    $(DESTDIR)$(UNITDIR)/promd.service \
	    $(DESTDIR)$(DBUS_POLICYDIR)/org.promd1.conf \
	    $(addprefix $(DESTDIR)$(DBUS_INTERFACESDIR)/,$(notdir $(DBUS_INTERFACES))) \
	    $(DESTDIR)$(CATALOGDIR)/promd.catalog \
	    $(DESTDIR)$(SYSUSERSDIR)/promd.conf $(DESTDIR)$(TMPFILESDIR)/promd.conf \
	    $(DESTDIR)$(MANDIR)/man8/promd.8.gz $(DESTDIR)$(MANDIR)/man1/promctl.1.gz \
	    $(DESTDIR)$(MANDIR)/man5/promd.toml.5.gz \
	    $(DESTDIR)$(BASH_COMPLETIONDIR)/promctl $(DESTDIR)$(ZSH_COMPLETIONDIR)/_promctl \
	    $(DESTDIR)$(FISH_COMPLETIONDIR)/promctl.fish
	rm -rf $(DESTDIR)$(DOCDIR)

# Everything a developer can check without root, stopping at the first failure.
check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets $(CARGO_FLAGS) -- -D warnings
	$(CARGO) test $(CARGO_FLAGS) --lib --bins $(addprefix --test ,$(ROOTLESS_TESTS))
	$(if $(HAVE_ETCD),,$(CARGO) test $(CARGO_FLAGS) --test store_contract -- dir::)
	$(CARGO) test $(CARGO_FLAGS) --doc
	@if [ -f tests/model_check.rs ]; then \
	    echo "$(CARGO) test $(CARGO_FLAGS) --profile ci --test model_check -- --test-threads=1"; \
	    $(CARGO) test $(CARGO_FLAGS) --profile ci --test model_check -- --test-threads=1; \
	else \
	    echo "model check: tests/model_check.rs does not exist yet, skipped"; \
	fi
	@$(MAKE) --no-print-directory check-man
	@$(if $(HAVE_ETCD),,echo "note: no etcd binary on PATH, so tests/etcd_store.rs, tests/etcd_secure.rs and the etcd halves of tests/store_contract.rs did not run (scripts/deps.sh installs it)")
	@echo "make check: ok (the system tests need root: sudo scripts/test.sh)"

# promctl's shell completions and man page are generated from its clap declaration by a unit
# test of promctl (src/bin/promctl/generate.rs), which fails when they are stale; this rewrites
# them.
generate:
	PROMCTL_REGENERATE=1 $(CARGO) test $(CARGO_FLAGS) --bin promctl -- generated_files_are_up_to_date
	@git status --short -- packaging/completions packaging/man/promctl.1

# The man pages must format without a warning (lintian checks the same).
check-man:
	@set -e; for page in $(MANPAGES); do \
	    out=$$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z $$page 2>&1 >/dev/null); \
	    if [ -n "$$out" ]; then echo "$$page:"; echo "$$out"; exit 1; fi; \
	done; echo "man pages: ok"

# debian/changelog must name the version Cargo.toml builds.
DEB_VERSION = $(shell dpkg-parsechangelog -l debian/changelog -S Version)

deb:
	@if [ "$(DEB_VERSION)" != "$(VERSION)" ]; then \
	    echo "make deb: debian/changelog says $(DEB_VERSION), Cargo.toml $(VERSION): add a changelog entry (dch -v $(VERSION))" >&2; \
	    exit 1; \
	fi
	mkdir -p $(DIST)
	DIST=$(DIST) dpkg-buildpackage --build=binary --no-sign \
	    --buildinfo-file=$(DIST)/promd_$(VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).buildinfo \
	    --changes-file=$(DIST)/promd_$(VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).changes \
	    --buildinfo-option=-u$(DIST) --changes-option=-u$(DIST)
	@ls -l $(DIST)/promd_$(VERSION)_*.deb

lintian:
	lintian --fail-on error,warning $(DIST)/promd_$(VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).changes

# rpmbuild does not run cargo: it packages what `make` built, through `make install`.
rpm: build
	mkdir -p $(DIST) $(RPM_TOPDIR)
	rpmbuild -bb rpm/promd.spec \
	    --define "_topdir $(RPM_TOPDIR)" \
	    --define "_rpmdir $(DIST)" \
	    --define "_rpmfilename %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
	    --define "promd_version $(VERSION)" \
	    --define "promd_srcdir $(CURDIR)" \
	    --define "promd_make $(MAKE)"
	@ls -l $(DIST)/promd-$(VERSION)-*.rpm

clean:
	$(CARGO) clean
	rm -rf debian/promd debian/.debhelper debian/files debian/*.substvars \
	    debian/debhelper-build-stamp debian/*.debhelper.log debian/*.debhelper
