package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

var zeroCopyRE = regexp.MustCompile(`(?m)^zero_copy = .*$`)

// reload switches the zero-copy mode through every value with systemctl
// reload: each returns with the new generation already serving, and each
// mode sends byte-exact under the unit's sandbox (seccomp, no network,
// read-only system).
func (z *zfsContainer) reload(t *testing.T) {
	conf, err := os.ReadFile(z.Path(confPath))
	if err != nil {
		t.Fatal(err)
	}
	if !zeroCopyRE.Match(conf) {
		t.Fatalf("%s has no zero_copy line", confPath)
	}
	defer os.WriteFile(z.Path(confPath), conf, 0o644)
	for _, mode := range []string{"splice", "mmap", "copy", "sendfile"} {
		before := z.status(t).Generation
		if err := os.WriteFile(z.Path(confPath), zeroCopyRE.ReplaceAll(conf, []byte(`zero_copy = "`+mode+`"`)), 0o644); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		z.Must("systemctl", "reload", unitService)
		took := time.Since(t0)
		// No polling: when systemctl reload returns, the new generation serves.
		st := z.status(t)
		if st.Generation != before+1 || st.State != ctl.StateServing || st.ZeroCopy != mode || !allReady(st, st.Generation, len(currentWorkers(st))) || len(currentWorkers(st)) == 0 {
			t.Fatalf("right after systemctl reload (%v): generation %d (was %d), state %s, zero_copy %s, workers %+v",
				took, st.Generation, before, st.State, st.ZeroCopy, st.Workers)
		}
		z.fetch(t, "/big.bin", z.bigSHA)
	}
	// An invalid configuration: reload fails, the service keeps serving.
	before := z.status(t).Generation
	if err := os.WriteFile(z.Path(confPath), append(append([]byte(nil), conf...), "no_such_key = 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := z.Exec(time.Minute, "systemctl", "reload", unitService); r.Code == 0 {
		t.Errorf("systemctl reload with an unknown key succeeded")
	}
	if st := z.status(t); st.Generation != before || st.State != ctl.StateServing || !strings.HasPrefix(st.LastReload, "failed") {
		t.Errorf("after a failed reload: generation %d (was %d), state %s, last reload %q", st.Generation, before, st.State, st.LastReload)
	}
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "active" {
		t.Errorf("%s is %q after a failed reload, want active", unitService, s)
	}
	z.fetch(t, "/small.bin", z.smallSHA)
}
