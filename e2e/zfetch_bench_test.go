package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkZfetchRecv measures zfetch's receive modes on one file over
// loopback (1 GiB by default; ZFETCH_BENCH_SIZE in bytes overrides), served
// with sendfile by one worker: into a file in a temporary directory, and
// to stdout redirected to /dev/null. Each run is one whole zfetch process;
// the median run is reported as MB/s-median (the figures in
// docs/ZFETCH.md come from here):
//
//	go test ./e2e -run '^$' -bench ZfetchRecv -benchtime 9x
func BenchmarkZfetchRecv(b *testing.B) {
	size := int64(1 << 30)
	if s := os.Getenv("ZFETCH_BENCH_SIZE"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		size = n
	}
	root := shortTempDir(b)
	WriteRandom(b, filepath.Join(root, "big.bin"), size)
	d := StartDaemon(b, DaemonOpts{Root: root, Workers: 1})
	out := shortTempDir(b)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	for _, dst := range []string{"file", "stdout"} {
		for _, mode := range []string{"copy", "splice", "mmap"} {
			if dst == "stdout" && mode == "mmap" {
				continue // stdout cannot be mapped: mmap means zfetch's choice (copy into /dev/null)
			}
			b.Run(dst+"/"+mode, func(b *testing.B) {
				b.SetBytes(size)
				var runs []time.Duration
				for i := 0; i < b.N; i++ {
					args := []string{"-q", "--recv", mode}
					file := filepath.Join(out, fmt.Sprintf("%s-%d.bin", mode, i))
					if dst == "file" {
						args = append(args, "-o", file)
					} else {
						args = append(args, "-o", "-")
					}
					cmd := exec.Command(zfetch, append(args, d.URL("/big.bin"))...)
					cmd.Stdout, cmd.Stderr = devnull, os.Stderr
					start := time.Now()
					if err := cmd.Run(); err != nil {
						b.Fatalf("zfetch: %v", err)
					}
					runs = append(runs, time.Since(start))
					b.StopTimer()
					os.Remove(file)
					b.StartTimer()
				}
				slices.Sort(runs)
				med := runs[len(runs)/2]
				b.ReportMetric(float64(size)/med.Seconds()/1e6, "MB/s-median")
			})
		}
	}
}
