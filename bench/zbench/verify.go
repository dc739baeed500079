package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The verify section: the big file saved into a file on tmpfs by curl,
// aria2c and zfetch (verifying a SHA-256 while receiving, and not), so
// that what a verified download costs is measured beside what users' other
// clients do with the same file. tmpfs keeps the disk out of it.

var mClientGB = Metric{Key: "client_cpu_per_gb", Label: "client CPU s/GB", Scale: 1, Digits: 2, Lower: true}

// verifyBase is the row the verify section's ratios divide by.
const verifyBase = "curl<-nginx"

// verifyClient is one row of the verify section: a command that writes
// the big file to out.
type verifyClient struct {
	key, label string
	name       string
	args       []string
}

// verifyClients returns the section's rows, curl first. aria2c is left
// out when it is not installed (haveAria2 false).
func verifyClients(bin, out, sum string, ng, zfs *server, haveAria2 bool) []verifyClient {
	nginxURL := "http://" + ng.addr + "/big.bin"
	zfetch := filepath.Join(bin, "zfetch")
	cs := []verifyClient{
		{verifyBase, "curl <- nginx", "curl", []string{"-sS", "-f", "-o", out, nginxURL}},
	}
	if haveAria2 {
		cs = append(cs, verifyClient{"aria2c<-nginx", "aria2c -x1 -s1 <- nginx", "aria2c", []string{
			"-q", "-x1", "-s1", "--allow-overwrite=true", "--auto-file-renaming=false",
			"--file-allocation=none", "-d", filepath.Dir(out), "-o", filepath.Base(out), nginxURL}})
	}
	return append(cs,
		verifyClient{"zfetch-sha256<-nginx", "zfetch --sha256 <- nginx", zfetch, []string{"-q", "-o", out, "--sha256", sum, nginxURL}},
		verifyClient{"zfetch-noverify<-nginx", "zfetch --no-verify <- nginx", zfetch, []string{"-q", "-o", out, "--no-verify", nginxURL}},
		verifyClient{"zfetch<-" + zfs.key, "zfetch <- zfs-serve (sendfile), no digest", zfetch, []string{"-q", "-o", out, "zfs://" + zfs.addr + "/big.bin"}},
	)
}

// verifyOutputs are the files a client may leave beside out: zfetch's
// .part, aria2c's control file.
func verifyOutputs(out string) []string {
	return []string{out, out + ".part", out + ".aria2"}
}

func (b *bench) verify(ng, zfs *server) {
	sec := &Section{ID: "verify", Title: fmt.Sprintf("One %s file saved to tmpfs: curl, aria2c, zfetch verified and not", sizeName(b.p.BigSize)),
		What:    "Each client saves the big file into a file on tmpfs (removed before and after every run), timed from process start to exit: `curl -sS -f -o FILE`, `aria2c -x1 -s1` (one connection) and `zfetch -q -o FILE` from nginx, zfetch with `--sha256 HEX` (the digest checked while receiving) and with `--no-verify`; and `zfetch -q -o FILE zfs://…` from zfs-serve with its digests off (so nothing is verified). The file's size is checked after each run. Client CPU = the client process's utime+stime (rusage) per GB; server CPU per GB as elsewhere. Ratios are each row's median over curl's.",
		Metrics: []Metric{mGBps, mClientGB, mCPUGB}, Ratios: []string{"gbps", "client_cpu_per_gb"}, RatioTo: verifyBase}
	dir := b.tmpfs
	if dir == "" || !isTmpfs(dir) {
		d, err := os.MkdirTemp(b.scratch, "verify-")
		if err != nil {
			b.fail("verify: %v", err)
			return
		}
		dir = d
		sec.Notes = append(sec.Notes, "no tmpfs (bench/run passes a folder in /dev/shm): the files went to the scratch folder, so the disk is in these figures")
	}
	out := filepath.Join(dir, "big.out")
	defer func() {
		for _, f := range verifyOutputs(out) {
			os.Remove(f)
		}
	}()
	sum, err := fileSHA256(filepath.Join(b.data, "big.bin"))
	if err != nil {
		b.fail("verify: %v", err)
		return
	}
	_, aerr := exec.LookPath("aria2c")
	if aerr != nil {
		sec.Notes = append(sec.Notes, "aria2c is not installed: its row is skipped (apt-get install aria2)")
	}
	b.quiet(sec)
	var keyed []*server
	runs := map[string]verifyClient{}
	for _, c := range verifyClients(b.bin, out, sum, ng, zfs, aerr == nil) {
		s := *ng
		if strings.HasSuffix(c.key, "<-"+zfs.key) {
			s = *zfs
		}
		s.key, s.label = c.key, c.label
		keyed = append(keyed, &s)
		runs[c.key] = c
	}
	run := func(s *server) (sample, error) {
		c := runs[s.key]
		return b.timedFile(b.p.BigSize, out, c.name, c.args...)
	}
	b.rounds(sec, keyed, measureOpt{}, run, run)
	b.finish(sec)
}

// timedFile runs a download that writes the file out, checks its size and
// returns the rate over the command's wall time and its CPU per GB. out
// (and what a client leaves beside it) is removed before and after.
func (b *bench) timedFile(size int64, out, name string, args ...string) (sample, error) {
	for _, f := range verifyOutputs(out) {
		os.Remove(f)
	}
	defer func() {
		for _, f := range verifyOutputs(out) {
			os.Remove(f)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	var errb bytes.Buffer
	c.Stdout, c.Stderr = &errb, &errb
	t0 := time.Now()
	err := c.Run()
	secs := time.Since(t0).Seconds()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, tail(errb.String(), 300))
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil, fmt.Errorf("%s wrote no file: %w", filepath.Base(name), err)
	}
	if st.Size() != size {
		return nil, fmt.Errorf("%s wrote %d bytes, want %d", filepath.Base(name), st.Size(), size)
	}
	cpu := (c.ProcessState.UserTime() + c.ProcessState.SystemTime()).Seconds()
	gb := float64(size) / 1e9
	return sample{"gbps": gb / secs, "bytes": float64(size), "seconds": secs,
		"client_cpu_s": cpu, "client_cpu_per_gb": cpu / gb}, nil
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func isTmpfs(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Type == unix.TMPFS_MAGIC
}
