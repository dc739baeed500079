package config

import (
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// exampleConfig is the commented example shipped with the package.
const exampleConfig = "../etc/zfs-serve.toml"

func TestExampleConfigLoads(t *testing.T) {
	t.Setenv("CACHE_DIRECTORY", "") // digest_cache "" follows it
	root := t.TempDir()
	c, err := Source{Path: exampleConfig, Explicit: true, Overrides: Overrides{Root: root}}.Load()
	if err != nil {
		t.Fatalf("the example config does not load: %v", err)
	}
	// Its values are the defaults (it documents them), bar root and control.
	want := Default()
	want.Root, want.Control, want.Workers = root, ctl.SystemControlPath, runtime.NumCPU()
	if !reflect.DeepEqual(c, want) {
		t.Errorf("example config values differ from the defaults it documents:\n got %+v\nwant %+v", c, want)
	}
}

func TestExampleConfigHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		t.Fatal(err)
	}
	lines, err := decode(exampleConfig, data, Default())
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			t.Errorf("field %s has no toml key", typ.Field(i).Name)
			continue
		}
		tags = append(tags, tag)
		if _, ok := m[tag]; !ok {
			t.Errorf("%s does not set key %q (field %s): document every key there", exampleConfig, tag, typ.Field(i).Name)
		}
		// Each key is documented by a comment just above it.
		if l := lines[tag]; l < 2 || !commentedAbove(data, l) {
			t.Errorf("%s: key %q (line %d) has no comment above it", exampleConfig, tag, l)
		}
	}
	for k := range m {
		if !slices.Contains(tags, k) {
			t.Errorf("%s sets %q, which is not a Config key", exampleConfig, k)
		}
	}
}

// commentedAbove reports whether the lines just above line (1-based),
// skipping other assignments of a group like user/group, include a comment.
func commentedAbove(data []byte, line int) bool {
	lines := strings.Split(string(data), "\n")
	for i := line - 2; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		switch {
		case strings.HasPrefix(l, "#"):
			return true
		case l == "":
			return false
		}
	}
	return false
}
