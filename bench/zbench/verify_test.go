package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVerifyClients(t *testing.T) {
	ng := &server{key: "nginx", addr: "127.0.0.1:1"}
	zfs := &server{key: "zfs-sendfile", addr: "127.0.0.1:2"}
	for _, tc := range []struct {
		aria2 bool
		keys  []string
	}{
		{true, []string{"curl<-nginx", "aria2c<-nginx", "zfetch-sha256<-nginx", "zfetch-noverify<-nginx", "zfetch<-zfs-sendfile"}},
		{false, []string{"curl<-nginx", "zfetch-sha256<-nginx", "zfetch-noverify<-nginx", "zfetch<-zfs-sendfile"}},
	} {
		cs := verifyClients("/bin", "/shm/x/big.out", "abc", ng, zfs, tc.aria2)
		var keys []string
		args := map[string]string{}
		for _, c := range cs {
			keys = append(keys, c.key)
			args[c.key] = c.name + " " + strings.Join(c.args, " ")
		}
		if !slices.Equal(keys, tc.keys) {
			t.Errorf("aria2 %v: rows %q, want %q", tc.aria2, keys, tc.keys)
		}
		for key, want := range map[string]string{
			"curl<-nginx":            "curl -sS -f -o /shm/x/big.out http://127.0.0.1:1/big.bin",
			"aria2c<-nginx":          "aria2c -q -x1 -s1 --allow-overwrite=true --auto-file-renaming=false --file-allocation=none -d /shm/x -o big.out http://127.0.0.1:1/big.bin",
			"zfetch-sha256<-nginx":   "/bin/zfetch -q -o /shm/x/big.out --sha256 abc http://127.0.0.1:1/big.bin",
			"zfetch-noverify<-nginx": "/bin/zfetch -q -o /shm/x/big.out --no-verify http://127.0.0.1:1/big.bin",
			"zfetch<-zfs-sendfile":   "/bin/zfetch -q -o /shm/x/big.out zfs://127.0.0.1:2/big.bin",
		} {
			if got, ok := args[key]; ok && got != want {
				t.Errorf("%s: %q, want %q", key, got, want)
			}
		}
	}
}

// timedFile checks the size of what the command wrote and leaves nothing
// behind, whatever the outcome.
func TestTimedFile(t *testing.T) {
	b := &bench{}
	out := filepath.Join(t.TempDir(), "big.out")
	for _, tc := range []struct {
		script  string
		wantErr string
	}{
		{"head -c 4096 /dev/zero > $0", ""},
		{"head -c 100 /dev/zero > $0", "wrote 100 bytes, want 4096"},
		{"true", "wrote no file"},
		{"echo boom >&2; exit 3", "boom"},
	} {
		os.WriteFile(out+".part", []byte("stale"), 0o644)
		m, err := b.timedFile(4096, out, "sh", "-c", tc.script, out)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v", tc.script, err)
		case tc.wantErr == "" && (m["gbps"] <= 0 || m["client_cpu_per_gb"] < 0):
			t.Errorf("%q: sample %v", tc.script, m)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want %q", tc.script, err, tc.wantErr)
		}
		for _, f := range verifyOutputs(out) {
			if _, err := os.Stat(f); err == nil {
				t.Errorf("%q: %s left behind", tc.script, f)
			}
		}
	}
}

// With RatioTo every other row is divided by that row, whoever serves it,
// and the section's notes are printed.
func TestRenderRatioTo(t *testing.T) {
	run := func(g, c float64) []map[string]float64 {
		return []map[string]float64{{"gbps": g, "client_cpu_per_gb": c}}
	}
	s := &Section{ID: "verify", Title: "verify", Metrics: []Metric{mGBps, mClientGB}, Ratios: []string{"gbps", "client_cpu_per_gb"}, RatioTo: "curl<-nginx",
		Notes: []string{"aria2c is not installed"},
		Rows: []*Row{
			{Key: "curl<-nginx", Label: "curl <- nginx", Runs: run(2, 0.5)},
			{Key: "zfetch-sha256<-nginx", Label: "zfetch --sha256 <- nginx", Runs: run(1, 1)},
			{Key: "zfetch<-zfs-sendfile", Label: "zfetch <- zfs-serve", Runs: run(3, 0.25)},
		}}
	var w strings.Builder
	renderSection(&w, s, false)
	out := w.String()
	for _, want := range []string{
		"_Note: aria2c is not installed._",
		"| GB/s: ratio | ÷ curl <- nginx | ",
		"| zfetch --sha256 <- nginx | 0.50x |",
		"| zfetch <- zfs-serve | 1.50x |",
		"| client CPU s/GB: ratio | ÷ curl <- nginx | ",
		"| zfetch --sha256 <- nginx | 2.00x |",
		"| zfetch <- zfs-serve | 0.50x |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| curl <- nginx | 1.00x") {
		t.Errorf("curl is divided by itself:\n%s", out)
	}
}
