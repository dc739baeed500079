package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestHTTPKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		toml    string
		index   []string
		wantErr string
	}{
		{"index = []\n", []string{}, ""},
		{"index = [\"a.html\", \"index.htm\"]\n", []string{"a.html", "index.htm"}, ""},
		{"index = [\"a/b.html\"]\n", nil, `key "index"`},
		{"index = [\"..\"]\n", nil, `key "index"`},
		{"max_ranges = -1\n", nil, `key "max_ranges"`},
		{"http = false\nlisting = false\naccess_log = true\nmax_ranges = 0\n", []string{"index.html"}, ""},
	} {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte("root = "+strconv.Quote(dir)+"\n"+tt.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Source{Path: p, Explicit: true}.Load()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: err %v, want %s", tt.toml, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if !slices.Equal(c.Index, tt.index) {
			t.Errorf("%q: index %q, want %q", tt.toml, c.Index, tt.index)
		}
	}
}

// TestDigestKeys: digest_cache is made absolute (relative to the file),
// "" follows systemd's $CACHE_DIRECTORY (memory only without it), and
// "memory" keeps digests in memory even under systemd.
func TestDigestKeys(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		toml, cacheDirectory string
		digests              bool
		cache                string
	}{
		{"", "", true, ""},
		{"", "/var/cache/zfs-serve", true, "/var/cache/zfs-serve/sha256"},
		{"", "/var/cache/zfs-serve:/var/cache/other", true, "/var/cache/zfs-serve/sha256"},
		{"digest_cache = \"memory\"\n", "/var/cache/zfs-serve", true, "memory"},
		{"digest_cache = \"/srv/cache\"\n", "/var/cache/zfs-serve", true, "/srv/cache"},
		{"digest_cache = \"cache\"\n", "", true, filepath.Join(dir, "cache")},
		{"digests = false\n", "", false, ""},
	} {
		t.Setenv("CACHE_DIRECTORY", tt.cacheDirectory)
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte("root = "+strconv.Quote(dir)+"\n"+tt.toml), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Source{Path: p, Explicit: true}.Load()
		if err != nil {
			t.Fatalf("%q: %v", tt.toml, err)
		}
		if c.Digests != tt.digests || c.DigestCache != tt.cache {
			t.Errorf("%q with CACHE_DIRECTORY=%q: digests %v, digest_cache %q; want %v, %q",
				tt.toml, tt.cacheDirectory, c.Digests, c.DigestCache, tt.digests, tt.cache)
		}
		// Resolving again (a worker's copy, a reload) changes nothing.
		again := *c
		if err := again.Resolve(); err != nil || again.DigestCache != c.DigestCache {
			t.Errorf("%q: resolved again: %q, %v", tt.toml, again.DigestCache, err)
		}
	}
}

// TestDispatchAcceptPerClient: the accept dispatch mode cannot count
// connections per client, so the combination is refused, naming both keys.
func TestDispatchAcceptPerClient(t *testing.T) {
	c := Default()
	c.Dispatch, c.MaxConnectionsPerClient = DispatchAccept, 4
	err := c.validate()
	var ke *KeyError
	if !errors.As(err, &ke) || ke.Key != "dispatch" || !strings.Contains(err.Error(), "max_connections_per_client") {
		t.Fatalf("validate = %v, want a dispatch error naming max_connections_per_client", err)
	}
	c.MaxConnectionsPerClient = 0
	if err := c.validate(); err != nil {
		t.Fatalf("dispatch = accept without a per-client limit: %v", err)
	}
}
