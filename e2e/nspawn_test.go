package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zfs-serve/zfs-serve/ctl"
)

// TestSystemdPackage is the Debian package under a real systemd: `make
// deb`, boot systemd 252 as PID 1 of a systemd-nspawn container, `dpkg -i`
// the package, then drive it with systemctl, journalctl, zctl and zfetch:
// socket activation on the first connection, status through systemd and
// zctl (root, the control group, refused for others), reload that returns
// once the new generation serves (in every zero-copy mode, under the
// unit's sandbox), stop that lets a paused download finish, the service
// pulling in its sockets, the journal, the watchdog restarting a frozen
// supervisor, upgrade, remove and purge.
//
// It needs root, systemd-nspawn, zstd and (the first time on a machine)
// debootstrap and the network; elsewhere it skips and says why.
func TestSystemdPackage(t *testing.T) {
	t.Parallel()
	skipUnlessNspawn(t)
	begin := time.Now()
	pkg := buildDeb(t)
	t.Logf("make deb: %s in %v", filepath.Base(pkg.deb), time.Since(begin).Round(10*time.Millisecond))
	c := bootContainer(t, filepath.Dir(pkg.deb)+":/pay")
	z := &zfsContainer{container: c, pkg: pkg, out: shortTempDir(t)}

	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"install", z.install},
		{"socket activation", z.socketActivation},
		{"status and permissions", z.statusAndPermissions},
		{"digests in the cache directory", z.digests},
		{"reload", z.reload},
		{"stop with a download in flight", z.stopInFlight},
		{"service start pulls in its sockets", z.serviceStart},
		{"metrics socket", z.metricsSocket},
		{"access log in the journal", z.accessLogJournal},
		{"access log file", z.accessLogFile},
		{"journal", z.journal},
		{"watchdog", z.watchdog},
		{"upgrade", z.upgrade},
		{"upgrade starts the enabled sockets", z.upgradeStartsSockets},
		{"rolling restart (docs/FLEET.md)", z.rollingRestart},
		{"remove and purge", z.purge},
	}
	// Each step starts from where the previous one left the system.
	for i, s := range steps {
		t0 := time.Now()
		if i > 0 {
			// The steps start the service more often than systemd's
			// default start limit allows (5 in 10s); not under test.
			z.Must("systemctl", "reset-failed", unitService)
		}
		ok := t.Run(s.name, func(t *testing.T) { z.container.t = t; s.f(t) })
		z.container.t = t
		t.Logf("%s: %v", s.name, time.Since(t0).Round(10*time.Millisecond))
		if !ok {
			return
		}
	}
	t.Logf("total (without power-off): %v", time.Since(begin).Round(10*time.Millisecond))
}

// builtPackage is the .deb under test and what went into it.
type builtPackage struct {
	deb     string
	version string
	zfetch  string // the packaged zfetch, run on the host side
}

// buildDeb runs `make deb` into a temporary directory.
func buildDeb(t *testing.T) builtPackage {
	t.Helper()
	v := runCmd(t, time.Minute, exec.Command("make", "-s", "-C", "..", "version"))
	version := strings.TrimSpace(v.Stdout)
	if v.Code != 0 || version == "" {
		t.Fatalf("make version: exit %d: %s", v.Code, v.Stderr)
	}
	dist := t.TempDir()
	r := runCmd(t, 10*time.Minute, exec.Command("make", "-C", "..", "deb", "DIST="+dist, "VERSION="+version))
	if r.Code != 0 {
		t.Fatalf("make deb: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "zfs-serve_"+version+"_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v in %s, want one zfs-serve_%s_ARCH.deb\n%s", debs, dist, version, r.Stdout)
	}
	zf, _ := filepath.Glob(filepath.Join(dist, "build", "*", "zfetch"))
	if len(zf) == 0 {
		t.Fatalf("no zfetch under %s/build", dist)
	}
	return builtPackage{deb: debs[0], version: version, zfetch: zf[0]}
}

// zfsContainer is the container with the package, and the test's steps.
type zfsContainer struct {
	*container
	pkg      builtPackage
	out      string // host directory for downloads
	bigSHA   string
	smallSHA string
}

const (
	unitService = "zfs-serve.service"
	unitSocket  = "zfs-serve.socket"
	unitControl = "zfs-serve-control.socket"
	confPath    = "/etc/zfs-serve/zfs-serve.toml"
	servedDir   = "/srv/zfs-serve"
	bigSize     = 48 << 20 // more than the socket buffers hold: a paused client stops the send
)

func (z *zfsContainer) install(t *testing.T) {
	deb := "/pay/" + filepath.Base(z.pkg.deb)
	if r := z.Exec(2*time.Minute, "dpkg", "-i", deb); r.Code != 0 {
		t.Fatalf("dpkg -i: exit %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	if got := strings.TrimSpace(z.Must("zfs-serve", "--version")); got != "zfs-serve "+z.pkg.version {
		t.Errorf("zfs-serve --version = %q, want the stamped %q", got, z.pkg.version)
	}
	z.Must("getent", "passwd", "zfs-serve")
	z.Must("getent", "group", "zfs-serve")
	if st, err := os.Stat(z.Path(servedDir)); err != nil || !st.IsDir() {
		t.Errorf("%s: %v, want a directory made by postinst", servedDir, err)
	}
	conffiles := z.Must("dpkg-query", "-W", "-f=${Conffiles}", "zfs-serve")
	for _, f := range []string{confPath, "/etc/logrotate.d/zfs-serve"} {
		if !strings.Contains(conffiles, f) {
			t.Errorf("%s is not a conffile: %q", f, conffiles)
		}
	}
	if b, err := os.ReadFile(z.Path(confPath)); err != nil || !strings.Contains(string(b), `control_group = "zfs-serve"`) {
		t.Errorf("%s lacks control_group = \"zfs-serve\" (err %v)", confPath, err)
	}
	for _, f := range []string{"/usr/bin/zfs-serve", "/usr/bin/zctl", "/usr/bin/zfetch", "/usr/share/man/man8/zfs-serve.8.gz",
		"/usr/share/man/man8/zctl.8.gz", "/usr/share/man/man1/zfetch.1.gz", "/usr/share/doc/zfs-serve/copyright"} {
		if _, err := os.Stat(z.Path(f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	// Every unit passes verify with the package's binaries in place
	// (--man=no: the minimal image has no man). Any message fails.
	r := z.Exec(time.Minute, "systemd-analyze", "verify", "--man=no", unitService, unitSocket, unitControl, unitMetrics)
	if r.Code != 0 || r.Stdout != "" || r.Stderr != "" {
		t.Errorf("systemd-analyze verify: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	// postinst enabled and started the sockets; the service waits for a
	// connection.
	for _, u := range []string{unitSocket, unitControl} {
		if s := strings.TrimSpace(z.Exec(time.Minute, "systemctl", "is-enabled", u).Stdout); s != "enabled" {
			t.Errorf("%s is %q after install, want enabled", u, s)
		}
		if s := z.Show(u, "ActiveState")["ActiveState"]; s != "active" {
			t.Errorf("%s is %q after install, want active", u, s)
		}
	}
	if s := z.Show(unitService, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Errorf("%s is %q after install, want inactive until the first connection", unitService, s)
	}
	if s := z.Show(unitMetrics, "ActiveState")["ActiveState"]; s != "inactive" {
		t.Errorf("%s is %q after install, want inactive (shipped, not enabled)", unitMetrics, s)
	}
	z.bigSHA = WriteRandom(t, z.Path(servedDir+"/big.bin"), bigSize)
	z.smallSHA = WriteRandom(t, z.Path(servedDir+"/small.bin"), 1<<20+3)
}

// fetch downloads path with the packaged zfetch from the host, in the
// container's network namespace, and checks it byte for byte.
func (z *zfsContainer) fetch(t *testing.T, path, want string) {
	t.Helper()
	out := filepath.Join(z.out, "dl.bin")
	os.Remove(out)
	r := runCmd(t, 2*time.Minute, z.NetCommand(z.pkg.zfetch, "-q", "-o", out, "zfs://127.0.0.1:7070"+path))
	if r.Code != 0 {
		t.Fatalf("zfetch %s: exit %d: %s", path, r.Code, r.Stderr)
	}
	if got := FileSHA256(t, out); got != want {
		t.Fatalf("zfetch %s: sha256 %s, want %s", path, got, want)
	}
}

// status is `zctl status --json`, as root inside the container.
func (z *zfsContainer) status(t *testing.T) *ctl.Status {
	t.Helper()
	var st ctl.Status
	if err := json.Unmarshal([]byte(z.Must("zctl", "status", "--json")), &st); err != nil {
		t.Fatalf("zctl status --json: %v", err)
	}
	return &st
}

func currentWorkers(st *ctl.Status) []ctl.Worker {
	var ws []ctl.Worker
	for _, w := range st.Workers {
		if w.Generation == st.Generation {
			ws = append(ws, w)
		}
	}
	return ws
}
